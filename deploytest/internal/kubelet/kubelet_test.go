package kubelet

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The emulation enforces what it claims: the pod's ids and fsGroup, a
// read-only root, read-only Secret volumes, a writable emptyDir, no
// capabilities, no privilege escalation, and the cluster's names.
func TestKubeletSandbox(t *testing.T) {
	RequireRoot(t)
	no, yes := false, true
	uid, gid, fsGroup := int64(1234), int64(2345), int64(3456)
	mode := int32(0o440)
	tpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &fsGroup},
		Containers: []corev1.Container{{
			Name: "check",
			Command: []string{"sh", "-c", `
				echo "ids $(id -u) $(id -g) $(id -G)"
				echo "secret $(cat /etc/secret/secret)"
				touch /tmp/x 2>/dev/null && echo "root writable" || echo "root read-only"
				touch /etc/secret/x 2>/dev/null && echo "secret writable" || echo "secret read-only"
				touch /scratch/x && echo "emptyDir writable"
				grep -E '^(NoNewPrivs|CapBnd|CapEff):' /proc/self/status | tr -s '\t ' ' '
				echo "dns $(getent hosts peer.sandbox | tr -s ' ' ' ')"
				echo "listen $LISTEN"
			`},
			Env: []corev1.EnvVar{{Name: "LISTEN", Value: "0.0.0.0:8080"}},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &no,
				ReadOnlyRootFilesystem:   &yes,
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "secret", MountPath: "/etc/secret"}, {Name: "scratch", MountPath: "/scratch"}},
		}},
		Volumes: []corev1.Volume{
			{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "app", DefaultMode: &mode,
				Items: []corev1.KeyToPath{{Key: "secret", Path: "secret"}}}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
	}}
	const secret = "fedcba9876543210fedcba9876543210"
	k := New(t, nil, nil, map[string]map[string]string{"app": {"secret": secret}})
	peer := k.Net.Allocate()
	k.Net.Publish(peer, "peer.sandbox")
	p := k.Run(PodSpec{Name: "sandbox", Template: tpl})
	c := p.Containers[0]
	PollEvery(t, 20*time.Second, 10*time.Millisecond, "the check to finish", func() bool { _, ok := c.Exited(); return ok })
	got := strings.Split(strings.TrimSpace(c.Logs.String()), "\n")
	for i := range got {
		got[i] = strings.TrimSpace(got[i])
	}
	want := []string{
		"ids 1234 2345 2345 3456",
		"secret " + secret,
		"root read-only",
		"secret read-only",
		"emptyDir writable",
		"CapEff: 0000000000000000",
		"CapBnd: 0000000000000000",
		"NoNewPrivs: 1",
		"dns " + peer + " peer.sandbox",
		"listen " + p.IP + ":8080",
	}
	if !slices.Equal(got, want) {
		t.Errorf("inside the pod:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
