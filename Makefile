# metalhall — build, test, run, bench.
#
# `make test` is what CI runs (.ci/run). It installs the Debian packages the
# tests talk to (real peers: ipmi_sim, QEMU with iPXE, a Debian kernel) when
# they are missing (as root; otherwise it stops, unless ALLOW_SKIPS=1), then
# runs every Go test with the race detector and ends with a summary.

GO        ?= go
BIN       := bin
DATA_DIR  ?= ./metalhall-data
PKGS      := ./...

# Debian packages the tests use as real peers. Installed only when missing,
# after one `apt-get update` (a fresh machine has empty package lists).
TEST_DEBS := ipmitool openipmi qemu-system-x86 ipxe-qemu ovmf ipxe \
             linux-image-amd64 busybox-static cpio zstd xz-utils iproute2 \
             syslinux syslinux-common syslinux-efi mtools dosfstools dnsmasq-base \
             qemu-utils prometheus chromium lldpd man-db zsh fish etcd-server
BENCH_DEBS := kea-admin kea-dhcp4-server dnsmasq nginx curl

.PHONY: all build agent docs deb test test-stress test-short e2e demo fuzz deps bench-deps run bench lint fmt clean

all: build

build:
	$(GO) build -o $(BIN)/metalhall ./cmd/metalhall
	$(GO) build -o $(BIN)/metalhall-lab ./cmd/metalhall-lab
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/metalhall-agent ./cmd/metalhall-agent

# docs regenerates docs/cli-reference.md and the man pages in man/man1 from
# the command table; a test fails when the committed ones differ.
docs:
	$(GO) test -count=1 -run '^TestCLIReferenceIsTheCommandTable$$' ./cmd/metalhall -args -update-docs

# deb builds the Debian package (bin/metalhall_VERSION_ARCH.deb) with
# dpkg-deb: a static binary in /usr/bin, the systemd unit, the example
# /etc/metalhall/metalhall.yaml, the man pages, the shell completions and
# the docs (scripts/mkdeb). DEB_VERSION must begin with a digit.
DEB_VERSION ?= $(shell git log -1 --date=format:%Y%m%d --format=0.0~git%cd.%h 2>/dev/null || echo 0.0~dev)
DEB_ARCH    ?= $(shell $(GO) env GOARCH)
DEB_OUT     ?= $(BIN)

deb:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w -X main.version=$(DEB_VERSION)' -o $(BIN)/deb/metalhall ./cmd/metalhall
	scripts/mkdeb $(BIN)/deb/metalhall '$(DEB_VERSION)' $(DEB_ARCH) $(DEB_OUT)

# deps installs the Debian packages in $(1) that are not installed yet.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing"; \
	    if [ "$(ALLOW_SKIPS)" = 1 ]; then echo "ALLOW_SKIPS=1: going on without them; the tests that need them skip and are listed at the end"; \
	    else echo "run as root so that make can install them, or set ALLOW_SKIPS=1 to go on without them (their tests then skip)"; exit 1; fi; \
	  else echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null && \
	    case " $$missing " in *" lldpd "*) \
	      echo "lldpd: its service would announce this host on every interface; the tests run their own in namespaces: disabling it"; \
	      systemctl disable --now lldpd >/dev/null 2>&1 || true;; esac; \
	    case " $$missing " in *" etcd-server "*) \
	      echo "etcd-server: the tests run their own clusters on private loopback addresses: disabling the system one"; \
	      systemctl disable --now etcd >/dev/null 2>&1 || true;; esac; fi; \
	fi
endef

deps:
	$(call apt_install,$(TEST_DEBS))

bench-deps: deps
	$(call apt_install,$(BENCH_DEBS))

# The tests run through scripts/testsummary: it prints what go test would,
# then a summary of tests run and skipped, and fails when a test skipped
# for want of a package deps installs or of root while running as root
# (ALLOW_SKIPS=1 lists such skips without failing).
test: deps lint
	{ $(GO) test -json -race -count=1 -timeout 60m $(PKGS) 2>&1 || echo '{"Action":"go-test-exit"}'; } | ALLOW_SKIPS=$(ALLOW_SKIPS) $(GO) run ./scripts/testsummary
	@# The inventory suite again, unchanged, on the etcd engine (one etcd
	@# member in the test binary) and on bbolt wrapped as etcd's engine
	@# behaves: every write run twice (conflict retries), views fed by a
	@# change stream.
	for e in etcd retry follow; do echo "== inventory suite on METALHALL_TEST_ENGINE=$$e"; \
	  METALHALL_TEST_ENGINE=$$e $(GO) test -race -count=1 ./inventory/ || exit 1; done
	$(GO) test -run '^$$' -fuzz '^FuzzHandleDHCP$$' -fuzztime 150000x ./netboot

# fuzz runs the DHCP handler's fuzz target for longer than make test does.
# Budgets are counts, not durations: Go 1.26's fuzz coordinator can fail a
# clean run with "context deadline exceeded" when a duration ends on a busy
# machine (golang/go#75804, fixed in Go 1.27); a count has no deadline.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzHandleDHCP$$' -fuzztime 10000000x ./netboot

# e2e runs only the virtual-rack end-to-end suite (also part of make test).
e2e: deps
	$(GO) test -count=1 -v -timeout 60m ./lab/e2e

# demo: a rack of QEMU machines behind Redfish and IPMI BMCs, commissioned
# and provisioned through metalhall (root; about 2 minutes here).
demo: deps
	scripts/demo.sh

# test-stress runs the concurrency tests (listed in scripts/test-stress.sh)
# 20 times each under the race detector while busy loops load the CPUs:
# they must not fail. COUNT=N and LOAD=N change the defaults.
test-stress: deps
	GO=$(GO) scripts/test-stress.sh

# test-short skips the tests that boot VMs or start simulators.
test-short:
	$(GO) test -short -race -count=1 $(PKGS)

run: build
	$(BIN)/metalhall serve --data-dir $(DATA_DIR)

bench: bench-deps
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./bench/...

# lint: gofmt, go vet and staticcheck, all with zero findings. staticcheck
# is installed through the module proxy, pinned, only when missing.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
