package cliutil

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
)

// PprofEnv names the environment variable that, set to HOST:PORT, makes a
// carpfs daemon serve Go's profiling endpoints (/debug/pprof/) there: for
// finding where time goes, never needed in production.
const PprofEnv = "CARPFS_PPROF"

// StartPprof serves /debug/pprof/ on $CARPFS_PPROF when it is set.
func StartPprof() {
	addr := os.Getenv(PprofEnv)
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		if err := http.ListenAndServe(addr, mux); err != nil {
			slog.Warn("profiling endpoint not served", "env", PprofEnv, "addr", addr, "err", err)
		}
	}()
}
