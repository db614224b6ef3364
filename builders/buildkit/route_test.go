package buildkit

import (
	"strings"
	"testing"

	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

func plats(t *testing.T, ss ...string) []ocispecs.Platform {
	t.Helper()
	var out []ocispecs.Platform
	for _, s := range ss {
		p, err := platforms.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, platforms.Normalize(p))
	}
	return out
}

// TestRoute: each platform goes to the first node that builds it natively (declared, else its
// workers' platforms when it declares none), else to the first that emulates it; groups keep
// the order of their first platform; a platform nobody builds is an error naming every node.
func TestRoute(t *testing.T) {
	x86 := &Node{Name: "x86", Address: "tcp://a:1", Native: plats(t, "linux/amd64"), Workers: plats(t, "linux/amd64", "linux/386", "linux/riscv64")}
	grace := &Node{Name: "grace", Address: "tcp://b:1", Native: plats(t, "linux/arm64"), Workers: plats(t, "linux/arm64", "linux/arm/v7")}
	any := &Node{Name: "any", Address: "tcp://c:1", Workers: plats(t, "linux/ppc64le")}
	nodes := []*Node{x86, grace, any}

	got := func(groups []platformGroup) string {
		var parts []string
		for _, g := range groups {
			var ps []string
			for _, p := range g.platforms {
				ps = append(ps, platforms.Format(p))
			}
			parts = append(parts, g.node.Name+"="+strings.Join(ps, "+"))
		}
		return strings.Join(parts, " ")
	}
	for _, tc := range []struct{ platforms, want string }{
		{"linux/arm64,linux/amd64", "grace=linux/arm64 x86=linux/amd64"},
		{"linux/amd64,linux/arm64,linux/386", "x86=linux/amd64+linux/386 grace=linux/arm64"},
		{"linux/ppc64le", "any=linux/ppc64le"}, // declares none: its workers' platforms are native
		{"linux/arm/v7", "grace=linux/arm/v7"}, // only grace's workers build it (emulated)
		{"linux/riscv64", "x86=linux/riscv64"}, // emulated on the first that can
		{"linux/amd64,linux/amd64", "x86=linux/amd64+linux/amd64"},
	} {
		groups, err := route(nodes, plats(t, strings.Split(tc.platforms, ",")...))
		if err != nil {
			t.Errorf("route(%s): %v", tc.platforms, err)
			continue
		}
		if g := got(groups); g != tc.want {
			t.Errorf("route(%s) = %s; want %s", tc.platforms, g, tc.want)
		}
	}
	_, err := route(nodes, plats(t, "linux/amd64", "linux/s390x"))
	want := "no node of the builder builds linux/s390x: x86 (tcp://a:1) builds linux/amd64; grace (tcp://b:1) builds linux/arm64; any (tcp://c:1) builds linux/ppc64le"
	if err == nil || err.Error() != want {
		t.Errorf("route with linux/s390x = %v; want %s", err, want)
	}
	// One node builds everything, as a single builder does.
	groups, err := route([]*Node{{Name: "default"}}, plats(t, "linux/amd64", "linux/s390x"))
	if err != nil || got(groups) != "default=linux/amd64+linux/s390x" {
		t.Errorf("route on one node = %s, %v", got(groups), err)
	}
	if n := NodeFor(nodes, platforms.MustParse("linux/arm64")); n != grace {
		t.Errorf("NodeFor(linux/arm64) = %s", n.Name)
	}
	if n := NodeFor(nodes, platforms.MustParse("linux/mips64")); n != x86 {
		t.Errorf("NodeFor(linux/mips64) = %s; want the first node", n.Name)
	}
}
