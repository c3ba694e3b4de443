package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/lab/netns"
	mhservice "github.com/metalhall/metalhall/service"
)

// nginx is Debian's nginx serving the image file, in the service
// namespace: the image-streaming ceiling on this box.
type nginx struct {
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

// It listens twice: plain HTTP, as the provisioning listener serves agents,
// and TLS with the service's own certificate and key (from its data dir),
// as the admin listener serves blobs to API tokens.
func startNginx(ctx context.Context, ns *netns.Namespace, dir string, img []byte, data string) (*nginx, error) {
	for _, d := range []string{"www", "tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "image.raw"), img, 0o600); err != nil {
		return nil, err
	}
	// user root: the temp dir is 0700. sendfile, no access log: nginx at
	// its best for one static file.
	conf := fmt.Sprintf(`user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 30;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  types { application/octet-stream raw; }
  server {
    listen %[2]s:%[3]d;
    root %[1]s/www;
  }
  server {
    listen %[2]s:%[4]d ssl;
    ssl_certificate %[5]s;
    ssl_certificate_key %[6]s;
    root %[1]s/www;
  }
}
`, dir, serverAddr, nginxPort, nginxTLS,
		filepath.Join(data, mhservice.GeneratedCertFile), filepath.Join(data, mhservice.GeneratedKeyFile))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "logs", "stderr.log"))
	if err != nil {
		return nil, err
	}
	cmd := ns.Command(context.Background(), "nginx", "-p", dir, "-c", confPath, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	n := &nginx{cmd: cmd, exited: make(chan struct{}), dir: dir}
	go func() { cmd.Wait(); logf.Close(); close(n.exited) }()
	// Ready when it accepts a connection on its address, from inside the
	// namespace.
	for i := 0; ; i++ {
		err := ns.Run(func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", serverAddr, nginxPort), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return n, nil
		}
		select {
		case <-n.exited:
			return nil, fmt.Errorf("nginx exited at start: %s", tail(filepath.Join(dir, "logs", "stderr.log"), 10)+tail(filepath.Join(dir, "logs", "error.log"), 10))
		case <-ctx.Done():
			n.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if i > 300 {
			n.stop()
			return nil, fmt.Errorf("nginx does not accept connections: %w", err)
		}
	}
}

func (n *nginx) pid() int { return n.cmd.Process.Pid }

// cpu sums the master's and its workers' CPU time.
func (n *nginx) cpu() float64 {
	total := procCPU(n.pid())
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", n.pid(), n.pid()))
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			total += procCPU(p)
		}
	}
	return total
}

// stop: SIGQUIT is nginx's graceful stop (workers finish, then exit).
func (n *nginx) stop() { stopProcess(n.cmd, n.exited, syscall.SIGQUIT, 20*time.Second) }
