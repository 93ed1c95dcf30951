package cluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// A daemon recorded in run/, where fnb-cluster kept its records before it
// used daemon.Group, is found in pids/ once adopted, and stops by it.
func TestAdoptRunRecords(t *testing.T) {
	c := Cluster{Dir: t.TempDir()}
	old := filepath.Join(c.Dir, "run", "etcd.pid")
	p, err := daemon.Start(context.Background(), daemon.Spec{Name: "etcd", Args: []string{"/bin/sleep", "300"},
		LogPath: filepath.Join(c.Dir, "logs", "etcd.log"), PIDFile: old})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	g := c.Daemons(nil)
	if _, ok := g.Running("etcd"); ok {
		t.Fatal("found in pids/ before adoption")
	}
	c.adoptRunRecords()
	r, ok := g.Running("etcd")
	if !ok || r.PID != p.PID {
		t.Fatalf("after adoption: running %v, record %+v, want PID %d", ok, r, p.PID)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "run")); !os.IsNotExist(err) {
		t.Fatalf("run/ is still there: %v", err)
	}
	g.Stop("etcd", 5*time.Second)
	if p.Alive() {
		t.Fatal("still running after Stop by the adopted record")
	}
}
