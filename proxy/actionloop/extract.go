// extract.go: materialising an /init payload as files under <root>/<N>/src.
//
// A zip (PK\x03\x04) is unzipped, a gzip stream is untarred, anything else
// becomes src/exec (0755). Archives come from users, so extraction refuses
// any entry that would land outside src — by "..", an absolute name, or by
// writing through a symlink an earlier entry planted — and stops once the
// uncompressed total exceeds the configured bound.

package actionloop

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Payload kinds recognised by their first bytes.
var (
	zipMagic  = []byte("PK\x03\x04")
	gzipMagic = []byte{0x1f, 0x8b, 0x08}
	elfMagic  = []byte("\x7fELF")
)

// extractor writes one archive into dest, counting uncompressed bytes.
type extractor struct {
	dest  string
	limit int64
	used  int64
}

// Extract materialises payload into dest (which must not exist yet).
func Extract(payload []byte, dest string, limit int64) error {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	x := &extractor{dest: dest, limit: limit}
	switch {
	case bytes.HasPrefix(payload, zipMagic):
		if err := x.unzip(payload); err != nil {
			return fmt.Errorf("cannot unzip the action: %w", err)
		}
	case bytes.HasPrefix(payload, gzipMagic):
		if err := x.untar(payload); err != nil {
			return fmt.Errorf("cannot untar the action: %w", err)
		}
	default:
		if int64(len(payload)) > limit {
			return fmt.Errorf("the action exceeds the limit of %d bytes", limit)
		}
		return os.WriteFile(filepath.Join(dest, "exec"), payload, 0o755)
	}
	return nil
}

// IsPrebuilt reports whether path is already an executable (ELF, or a script
// with a shebang), i.e. a pre-built action that is not compiled.
func IsPrebuilt(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	return bytes.HasPrefix(head, elfMagic) || bytes.HasPrefix(head, []byte("#!"))
}

// target maps an archive entry name to a path inside dest, and makes sure
// no existing component of its parent is a symlink: a symlink entry may
// point anywhere (virtualenvs link to the system python), but we never
// write through one.
func (x *extractor) target(name string) (string, error) {
	native := filepath.FromSlash(name)
	rel := filepath.Clean(native)
	if name == "" || filepath.IsAbs(native) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("illegal file path %q", name)
	}
	if rel == "." {
		return x.dest, nil
	}
	dir := x.dest
	parts := strings.Split(rel, string(filepath.Separator))
	for _, p := range parts[:len(parts)-1] {
		dir = filepath.Join(dir, p)
		fi, err := os.Lstat(dir)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return "", err
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("illegal file path %q: %s is not a directory", name, p)
		}
	}
	return filepath.Join(x.dest, rel), nil
}

// writeFile creates a regular file from r. O_EXCL refuses to reuse an
// existing name, which could be a symlink planted by an earlier entry.
func (x *extractor) writeFile(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode.Perm()|0o400)
	if err != nil {
		return err
	}
	// Count real bytes: archive headers can lie about sizes.
	remaining := x.limit - x.used
	n, err := io.Copy(f, io.LimitReader(r, remaining+1))
	x.used += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if x.used > x.limit {
		return fmt.Errorf("uncompressed size exceeds the limit of %d bytes", x.limit)
	}
	// Apply the mode after writing, unaffected by the umask.
	return os.Chmod(path, mode.Perm()|0o400)
}

// symlink creates a symlink entry as is; see target for why that is safe.
func (x *extractor) symlink(path, linkTarget string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	x.used += int64(len(linkTarget))
	if x.used > x.limit {
		return fmt.Errorf("uncompressed size exceeds the limit of %d bytes", x.limit)
	}
	return os.Symlink(linkTarget, path)
}

// mkdir creates a directory entry; an existing symlink in its place is an
// error rather than something to follow.
func (x *extractor) mkdir(path string) error {
	if fi, err := os.Lstat(path); err == nil {
		if fi.IsDir() {
			return nil
		}
		return fmt.Errorf("illegal directory %q: exists and is not a directory", path)
	}
	return os.MkdirAll(path, 0o755)
}

// unzip extracts a zip archive.
func (x *extractor) unzip(payload []byte) error {
	zr, err := zip.NewReader(bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		return err
	}
	for _, zf := range zr.File {
		path, err := x.target(zf.Name)
		if err != nil {
			return err
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir():
			err = x.mkdir(path)
		case mode&os.ModeSymlink != 0:
			err = x.zipSymlink(zf, path)
		case mode.IsRegular():
			err = x.zipFile(zf, path, mode)
		default:
			err = fmt.Errorf("unsupported entry %q of type %v", zf.Name, mode.Type())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// zipFile extracts one regular zip entry.
func (x *extractor) zipFile(zf *zip.File, path string, mode os.FileMode) error {
	rc, err := zf.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return x.writeFile(path, rc, mode)
}

// zipSymlink extracts one zip symlink entry (its content is the target).
func (x *extractor) zipSymlink(zf *zip.File, path string) error {
	rc, err := zf.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	const maxTarget = 4096 // PATH_MAX
	target, err := io.ReadAll(io.LimitReader(rc, maxTarget+1))
	if err != nil {
		return err
	}
	if len(target) > maxTarget {
		return fmt.Errorf("symlink %q: target too long", zf.Name)
	}
	return x.symlink(path, string(target))
}

// untar extracts a gzip-compressed tar archive.
func (x *extractor) untar(payload []byte) error {
	gz, err := gzip.NewReader(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // metadata only
		}
		path, err := x.target(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = x.mkdir(path)
		case tar.TypeReg, tar.TypeRegA:
			err = x.writeFile(path, tr, os.FileMode(hdr.Mode))
		case tar.TypeSymlink:
			err = x.symlink(path, hdr.Linkname)
		case tar.TypeLink:
			err = x.hardlink(path, hdr.Linkname)
		default:
			err = fmt.Errorf("unsupported entry %q of type %s", hdr.Name, strconv.QuoteRune(rune(hdr.Typeflag)))
		}
		if err != nil {
			return err
		}
	}
}

// hardlink links path to an earlier regular file of the same archive; a
// link to anything outside dest would let the action write there.
func (x *extractor) hardlink(path, linkname string) error {
	old, err := x.target(linkname)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(old)
	if err != nil {
		return fmt.Errorf("hard link %q: %w", linkname, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hard link %q: target is not a regular file", linkname)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.Link(old, path)
}
