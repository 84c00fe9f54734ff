// extract_test.go: materialising zip, tar.gz and plain payloads safely.

package actionloop

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExtractPlainIsExecutable(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "src")
	if err := Extract([]byte("print(1)"), dest, 100); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dest, "exec"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("%v %v", fi, err)
	}
	if IsPrebuilt(filepath.Join(dest, "exec")) {
		t.Fatal("python source taken as pre-built")
	}
	if err := Extract([]byte("print(1)"), filepath.Join(t.TempDir(), "s"), 3); err == nil {
		t.Fatal("plain payload over the limit accepted")
	}
}

func TestIsPrebuilt(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]bool{"#!/bin/sh\n": true, "\x7fELF\x02": true, "import os": false, "#": false} {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if IsPrebuilt(p) != want {
			t.Errorf("%q: want %v", content, want)
		}
	}
}

func TestExtractZipKeepsSymlinksAndModes(t *testing.T) {
	archive := zipOf(t, map[string]string{
		"__main__.py":            "x",
		"pkg/helper.py":          "y",
		"virtualenv/bin/python@": "/usr/bin/python3",
		"link@":                  "pkg/helper.py",
	})
	dest := filepath.Join(t.TempDir(), "src")
	if err := Extract(archive, dest, 1<<20); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(dest, "virtualenv/bin/python")); err != nil || target != "/usr/bin/python3" {
		t.Fatalf("absolute symlink: %q %v", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "link")); err != nil || string(b) != "y" {
		t.Fatalf("relative symlink: %q %v", b, err)
	}
}

func TestExtractTarGz(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range []*tar.Header{
		{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "dir/a.py", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
		{Name: "dir/hard", Typeflag: tar.TypeLink, Linkname: "dir/a.py"},
		{Name: "sym", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("a"))
		}
	}
	tw.Close()
	gz.Close()
	dest := filepath.Join(t.TempDir(), "src")
	if err := Extract(buf.Bytes(), dest, 1<<20); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "dir/hard")); string(b) != "a" {
		t.Fatal("hard link")
	}
	if target, _ := os.Readlink(filepath.Join(dest, "sym")); target != "/etc/passwd" {
		t.Fatal("symlink")
	}
}

func TestExtractRefusesToWriteOutside(t *testing.T) {
	outside := t.TempDir()
	cases := map[string][]byte{
		"dot-dot":           zipOf(t, map[string]string{"../escaped": "x"}),
		"absolute":          rawZip(t, "/tmp/escaped-abs", "x"),
		"through a symlink": zipOf(t, map[string]string{"a@": outside, "a/escaped": "x"}),
		"over a symlink":    zipOf(t, map[string]string{"b@": filepath.Join(outside, "escaped"), "b": "x"}),
		"tar dot-dot":       tarGzOf(t, map[string]string{"x/../../escaped": "x"}),
	}
	for name, archive := range cases {
		t.Run(name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "src")
			err := Extract(archive, dest, 1<<20)
			if _, serr := os.Stat(filepath.Join(outside, "escaped")); serr == nil {
				t.Fatal("wrote outside the destination")
			}
			if _, serr := os.Stat(filepath.Join(filepath.Dir(dest), "escaped")); serr == nil {
				t.Fatal("wrote outside the destination")
			}
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestExtractSizeBound(t *testing.T) {
	bomb := zipOf(t, map[string]string{"a": strings.Repeat("0", 1<<20), "b": strings.Repeat("0", 1<<20)})
	err := Extract(bomb, filepath.Join(t.TempDir(), "src"), 1<<20+100)
	if err == nil || !strings.Contains(err.Error(), "uncompressed size exceeds the limit of 1048676 bytes") {
		t.Fatalf("%v", err)
	}
	if err := Extract([]byte{0x1f, 0x8b, 0x08, 0, 0}, filepath.Join(t.TempDir(), "src"), 100); err == nil ||
		!strings.HasPrefix(err.Error(), "cannot untar the action: ") {
		t.Fatalf("broken gzip: %v", err)
	}
}

// rawZip builds a zip with one entry whose name is used unchecked.
func rawZip(t *testing.T, name, content string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(content))
	zw.Close()
	return buf.Bytes()
}
