package buildkit

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
)

// Summarize renders a marshalled LLB definition as text, one op per line in dependency order:
// sources, execs with their mounts, file actions. Golden tests pin it, and it is what a person
// reads to see what a recipe lowers to. Digests are left out so the text is stable.
func Summarize(def *llb.Definition) (string, error) {
	ops := map[digest.Digest]*pb.Op{}
	var order []digest.Digest
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			return "", err
		}
		d := digest.FromBytes(dt)
		ops[d] = &op
		order = append(order, d)
	}
	index := map[digest.Digest]int{}
	var sb strings.Builder
	n := 0
	for _, d := range order {
		op := ops[d]
		if op.Op == nil { // the terminal op names the result
			continue
		}
		index[d] = n
		n++
		var inputs []string
		for _, in := range op.Inputs {
			inputs = append(inputs, fmt.Sprintf("#%d", index[digest.Digest(in.Digest)]))
		}
		name := ""
		if md, ok := def.Metadata[d]; ok && md.Description != nil {
			name = md.Description["llb.customname"]
		}
		fmt.Fprintf(&sb, "#%d", index[d])
		if len(inputs) > 0 {
			fmt.Fprintf(&sb, " <- %s", strings.Join(inputs, ","))
		}
		if name != "" {
			fmt.Fprintf(&sb, " %q", name)
		}
		sb.WriteString("\n")
		switch o := op.Op.(type) {
		case *pb.Op_Source:
			fmt.Fprintf(&sb, "    source %s\n", o.Source.Identifier)
			for _, k := range sortedMapKeys(o.Source.Attrs) {
				if k == "local.unique" {
					continue // derived from the recipe's absolute path
				}
				fmt.Fprintf(&sb, "      %s=%s\n", k, o.Source.Attrs[k])
			}
		case *pb.Op_Exec:
			m := o.Exec.Meta
			fmt.Fprintf(&sb, "    exec %q cwd=%s\n", m.Args, m.Cwd)
			env := append([]string{}, m.Env...)
			sort.Strings(env)
			for _, e := range env {
				fmt.Fprintf(&sb, "      env %s\n", e)
			}
			for _, s := range o.Exec.Secretenv {
				fmt.Fprintf(&sb, "      secret-env %s from %s optional=%v\n", s.Name, s.ID, s.Optional)
			}
			for _, mnt := range o.Exec.Mounts {
				switch mnt.MountType {
				case pb.MountType_CACHE:
					fmt.Fprintf(&sb, "      mount cache %s id=%s sharing=%s\n", mnt.Dest, mnt.CacheOpt.ID, mnt.CacheOpt.Sharing)
				case pb.MountType_SECRET:
					fmt.Fprintf(&sb, "      mount secret %s id=%s mode=%o optional=%v\n", mnt.Dest, mnt.SecretOpt.ID, mnt.SecretOpt.Mode, mnt.SecretOpt.Optional)
				case pb.MountType_BIND:
					if mnt.Dest != "/" {
						fmt.Fprintf(&sb, "      mount bind %s\n", mnt.Dest)
					}
				default:
					fmt.Fprintf(&sb, "      mount %s %s\n", mnt.MountType, mnt.Dest)
				}
			}
		case *pb.Op_File:
			for _, a := range o.File.Actions {
				switch act := a.Action.(type) {
				case *pb.FileAction_Mkdir:
					fmt.Fprintf(&sb, "    mkdir %s mode=%o\n", act.Mkdir.Path, act.Mkdir.Mode)
				case *pb.FileAction_Mkfile:
					fmt.Fprintf(&sb, "    mkfile %s mode=%o %q\n", act.Mkfile.Path, act.Mkfile.Mode, firstLine(string(act.Mkfile.Data)))
				case *pb.FileAction_Copy:
					fmt.Fprintf(&sb, "    copy %s -> %s\n", act.Copy.Src, act.Copy.Dest)
				case *pb.FileAction_Rm:
					fmt.Fprintf(&sb, "    rm %s\n", act.Rm.Path)
				}
			}
		}
	}
	return sb.String(), nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func sortedMapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
