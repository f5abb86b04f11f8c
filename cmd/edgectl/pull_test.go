package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/model"
)

func TestPullCommand(t *testing.T) {
	w := model.NewWriter()
	require.NoError(t, w.Set("general.architecture", "llama"))
	var gguf bytes.Buffer
	_, err := w.WriteTo(&gguf)
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/m.gguf" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "m.gguf", time.Time{}, bytes.NewReader(gguf.Bytes()))
	}))
	defer srv.Close()
	cache := t.TempDir()

	out := mustEdgectl(t, "pull", srv.URL+"/m.gguf", "--cache", cache)
	path := strings.TrimSpace(out)
	assert.True(t, strings.HasPrefix(path, cache), "path %s outside the cache", path)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, gguf.Bytes(), got)

	// Flags before REF work too; a local file is printed as is.
	out = mustEdgectl(t, "pull", "--cache", cache, path)
	assert.Equal(t, path+"\n", out)

	code, _, errOut := edgectl(t, "pull", srv.URL+"/absent.gguf", "--cache", cache)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not found")

	code, _, errOut = edgectl(t, "pull", srv.URL+"/m.gguf", "--sha256", strings.Repeat("0", 64), "--cache", t.TempDir())
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "sha256 mismatch")

	code, _, _ = edgectl(t, "pull")
	assert.Equal(t, 2, code)
	code, _, _ = edgectl(t, "pull", "a", "b")
	assert.Equal(t, 2, code)
}
