package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Files and directories under the state directory.
const (
	pidFile    = "mfslocal.pid"   // the PID of the running `mfslocal up`, for scripts
	stateFile  = "mfslocal.state" // State as JSON
	exportsCfg = "mfsexports.cfg"
	masterCfg  = "mfsmaster.cfg" // optional: read by mfsmaster if someone writes it
	csCfg      = "mfschunkserver.cfg"
	mlCfg      = "mfsmetalogger.cfg"
	logDir     = "log"
	masterDir  = "master"
	mlDir      = "metalogger" // metalogger N's DATA_PATH is metaloggerN
	mountDir   = "mnt"
)

// State is what `mfslocal up` records about a run, so that `down` and
// `status` from another shell find its processes and can tell them from
// unrelated ones with the same PIDs.
type State struct {
	Dir        string    `json:"dir"`
	Started    time.Time `json:"started"`
	Up         Proc      `json:"up"`
	MasterAddr string    `json:"master_addr"` // client port
	CSAddr     string    `json:"cs_addr"`     // chunkserver port
	MLAddr     string    `json:"ml_addr"`     // metalogger port
	Mount      string    `json:"mount"`
	// Daemons are in start order: master, metaloggers, chunkservers,
	// mount.
	Daemons []Proc `json:"daemons"`
}

// writeState publishes st in dir atomically: `down` may read it at any
// moment.
func writeState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// ReadState reads the state file in dir; a missing file matches
// os.ErrNotExist.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

// readPID reads the pid file in dir.
func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: not a PID: %q", filepath.Join(dir, pidFile), b)
	}
	return pid, nil
}

// liveDaemons returns the daemons of st that still run.
func (st *State) liveDaemons() []Proc {
	var out []Proc
	for _, p := range st.Daemons {
		if p.Alive() {
			out = append(out, p)
		}
	}
	return out
}

// errNotRunning is returned when a state directory has no running
// cluster.
var errNotRunning = errors.New("no local cluster is running there")
