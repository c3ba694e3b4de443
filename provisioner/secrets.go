package provisioner

import (
	"encoding/json"
	"fmt"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
)

// A provision job's SSH keys and user data are the tenant's secrets: with
// a Sealer they are stored sealed (Job.Sealed), bound to the machine, and
// opened only to be served to it or shown to whoever may see the job.

type jobSecrets struct {
	SSHKeys  []string `json:"ssh_keys,omitempty"`
	UserData string   `json:"user_data,omitempty"`
}

func jobSecretsAD(machine string) []byte { return []byte("job secrets/" + machine) }

// sealSecrets moves j's keys and user data into j.Sealed.
func sealSecrets(s *seal.Sealer, j *inventory.Job) error {
	if s == nil || (len(j.SSHKeys) == 0 && j.UserData == "") {
		return nil
	}
	plain, err := json.Marshal(jobSecrets{SSHKeys: j.SSHKeys, UserData: j.UserData})
	if err != nil {
		return err
	}
	if j.Sealed, err = s.Seal(plain, jobSecretsAD(j.Machine)); err != nil {
		return fmt.Errorf("sealing the job's keys and user data: %w", err)
	}
	j.SSHKeys, j.UserData = nil, ""
	return nil
}

// OpenSecrets returns a job's SSH keys and user data, opening them when
// they are sealed (jobs stored before sealing hold them in clear).
func OpenSecrets(s *seal.Sealer, j *inventory.Job) ([]string, string, error) {
	if len(j.Sealed) == 0 {
		return j.SSHKeys, j.UserData, nil
	}
	if s == nil {
		return nil, "", fmt.Errorf("job %s: its keys and user data are sealed and no sealing key is loaded", j.ID)
	}
	plain, err := s.Open(j.Sealed, jobSecretsAD(j.Machine))
	if err != nil {
		return nil, "", fmt.Errorf("job %s: opening its keys and user data: %w", j.ID, err)
	}
	var out jobSecrets
	if err := json.Unmarshal(plain, &out); err != nil {
		return nil, "", fmt.Errorf("job %s: its sealed keys and user data: %w", j.ID, err)
	}
	return out.SSHKeys, out.UserData, nil
}
