package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Modes the kubelet uses (k8s.io/kubernetes pkg/volume: volume_linux.go,
// util/atomic_writer.go, emptydir).
const (
	secretDefaultMode = 0o644 // corev1.SecretVolumeSourceDefaultMode, ConfigMap's too
	roMask            = 0o440 // added for fsGroup on a read-only volume (Secret, ConfigMap)
	rwMask            = 0o660 // added for fsGroup on a writable one (emptyDir, a claim)
	execMask          = 0o110 // added to directories, with setgid
)

// setUpVolume writes one volume into dir as the kubelet would.
func (k *Kubelet) setUpVolume(ps PodSpec, name, dir string, fsGroup *int64, rewrite func(string) string) {
	t := k.t
	v, claim := ps.volume(name)
	switch {
	case claim != nil:
		// A fresh file system's root: root's, 0755; the next pod of the
		// same name finds it as the last one left it.
		if _, err := os.Stat(dir); err != nil {
			mkdir(t, dir, 0o755)
		}
		setOwnership(t, dir, fsGroup, false)
	case v == nil:
		t.Fatalf("pod %s mounts %s, which is no volume of it", ps.Name, name)
	case v.Secret != nil:
		data, ok := k.Secrets[v.Secret.SecretName]
		if !ok {
			t.Fatalf("volume %s: no Secret %s", name, v.Secret.SecretName)
		}
		writeAtomic(t, dir, data, v.Secret.Items, v.Secret.DefaultMode, name)
		setOwnership(t, dir, fsGroup, true)
	case v.ConfigMap != nil:
		data, ok := k.ConfigMaps[v.ConfigMap.Name]
		if !ok {
			t.Fatalf("volume %s: no ConfigMap %s", name, v.ConfigMap.Name)
		}
		rewritten := map[string]string{}
		for key, val := range data {
			rewritten[key] = rewrite(val)
		}
		writeAtomic(t, dir, rewritten, v.ConfigMap.Items, v.ConfigMap.DefaultMode, name)
		setOwnership(t, dir, fsGroup, true)
	case v.EmptyDir != nil:
		mode := os.FileMode(0o777)
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			mode |= os.ModeSticky // a tmpfs root
		}
		mkdir(t, dir, mode)
		setOwnership(t, dir, fsGroup, false)
	default:
		t.Fatalf("volume %s: its kind is not emulated", name)
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic lays out a Secret or ConfigMap volume as the kubelet's
// AtomicWriter does: the files in a timestamped folder (0755) with their
// mode, ..data pointing at it, and a symlink per file; the volume's root
// is a tmpfs (1777). The process that writes them is root.
func writeAtomic(t *testing.T, dir string, data map[string]string, items []corev1.KeyToPath, defaultMode *int32, volume string) {
	t.Helper()
	mkdir(t, dir, 0o777|os.ModeSticky)
	mode := int32(secretDefaultMode)
	if defaultMode != nil {
		mode = *defaultMode
	}
	type file struct {
		content string
		mode    int32
	}
	files := map[string]file{}
	if len(items) == 0 {
		for key, v := range data {
			files[key] = file{v, mode}
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume %s: no key %s", volume, it.Key)
		}
		m := mode
		if it.Mode != nil {
			m = *it.Mode
		}
		files[it.Path] = file{v, m}
	}
	ts := time.Now().UTC().Format("..2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	mkdir(t, tsDir, 0o755)
	top := map[string]bool{}
	for path, f := range files {
		full := filepath.Join(tsDir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(f.content), os.FileMode(f.mode)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, os.FileMode(f.mode)); err != nil {
			t.Fatal(err)
		}
		top[strings.Split(path, "/")[0]] = true
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range top {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// setOwnership is the kubelet's SetVolumeOwnership for fsGroup: every file
// and folder (not the symlinks) group-owned by fsGroup, with group read (and
// write, on a writable volume) added; folders also get setgid and group
// execute.
func setOwnership(t *testing.T, dir string, fsGroup *int64, readOnly bool) {
	t.Helper()
	if fsGroup == nil {
		return
	}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return os.Lchown(path, -1, int(*fsGroup))
		}
		if err := os.Lchown(path, -1, int(*fsGroup)); err != nil {
			return err
		}
		mask := os.FileMode(rwMask)
		if readOnly {
			mask = roMask
		}
		if info.IsDir() {
			mask |= os.ModeSetgid | execMask
		}
		return os.Chmod(path, info.Mode()|mask)
	})
	if err != nil {
		t.Fatal(err)
	}
}
