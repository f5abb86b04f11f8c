package daemon

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTestStore opens a store in a temporary directory and checks the
// database's consistency when the test ends.
func openTestStore(t *testing.T, dir string) *store {
	t.Helper()
	s, err := openStore(dir, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkStore(t, s) })
	return s
}

func checkStore(t *testing.T, s *store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		t.Errorf("database check: %v", err)
	}
	s.Close()
}

func TestStoreModels(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	for _, n := range []string{"b", "a"} {
		if err := s.putModel(storedModel{Name: n, Path: "/m/" + n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.deleteModel("b"); err != nil {
		t.Fatal(err)
	}
	ms, err := s.models()
	if err != nil || len(ms) != 1 || ms[0].Path != "/m/a" {
		t.Fatalf("models: %+v %v", ms, err)
	}
}

func TestStoreLockedFailsFast(t *testing.T) {
	dir := t.TempDir()
	openTestStore(t, dir)
	start := time.Now()
	_, err := openStore(dir, 100*time.Millisecond)
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second open: %v, want ErrAlreadyRunning", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
}
