package disk

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"go.yaml.in/yaml/v3"
)

// The cloud-init NoCloud seed of a boot check: a small FAT drive labelled CIDATA with
// meta-data and user-data. The user-data writes the report script and a systemd unit that
// runs it once cloud-init is done; the image itself carries no test code.
const (
	seedLabel = "CIDATA"
	// seedSize is the seed drive's size: the smallest FAT32 with 512-byte clusters that
	// keeps more than 65525 clusters, as the FAT32 specification wants. The file is sparse.
	seedSize = 40 << 20

	reportScriptPath = "/run/gpuforge/boot-report"
	reportUnitName   = "gpuforge-boot-report.service"
	reportUnitPath   = "/run/systemd/system/" + reportUnitName
	seedHostname     = "gpuforge-boot-check"
)

// seed is what a boot check's seed holds.
type seed struct {
	instanceID string // cloud-init's instance-id: new for each check, so cloud-init runs every module
}

func newSeed() (seed, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return seed{}, err
	}
	return seed{instanceID: "gpuforge-boot-check-" + hex.EncodeToString(b)}, nil
}

func (s seed) metaData() []byte {
	return []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", s.instanceID, seedHostname))
}

// cloudConfigFile is an entry of cloud-config's write_files.
type cloudConfigFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Content     string `yaml:"content"`
}

// cloudConfig is the part of cloud-config a boot check uses.
type cloudConfig struct {
	WriteFiles []cloudConfigFile `yaml:"write_files"`
	Runcmd     [][]string        `yaml:"runcmd"`
}

// userData is the #cloud-config: write the script and the unit, and start the unit from
// runcmd without waiting (the unit is ordered after cloud-final.service, which runs runcmd).
func (s seed) userData() ([]byte, error) {
	cc := cloudConfig{
		WriteFiles: []cloudConfigFile{
			{Path: reportScriptPath, Owner: "root:root", Permissions: "0755", Content: reportScript},
			{Path: reportUnitPath, Owner: "root:root", Permissions: "0644", Content: reportUnit},
		},
		Runcmd: [][]string{
			{"systemctl", "daemon-reload"},
			{"systemctl", "start", "--no-block", reportUnitName},
		},
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(cc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// write creates the seed drive at path: a whole-disk FAT32 labelled CIDATA (no partition
// table), which cloud-init's NoCloud datasource finds by its label.
func (s seed) write(path string) error {
	userData, err := s.userData()
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	d, err := diskfs.Create(path, seedSize, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	defer d.Close()
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: seedLabel})
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"meta-data", s.metaData()}, {"user-data", userData}} {
		w, err := fs.OpenFile("/"+f.name, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
		if err != nil {
			return fmt.Errorf("cloud-init seed: %s: %w", f.name, err)
		}
		if _, err := w.Write(f.data); err != nil {
			w.Close()
			return fmt.Errorf("cloud-init seed: %s: %w", f.name, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("cloud-init seed: %s: %w", f.name, err)
		}
	}
	return nil
}

// reportUnit runs the report script once, after cloud-init's last stage.
const reportUnit = `[Unit]
Description=gpuforge boot check: print the boot report on the serial console, then power off
After=cloud-final.service multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh ` + reportScriptPath + `
StandardOutput=journal
StandardError=journal
`

// reportScript is the guest side of a boot check (POSIX sh; the image has no jq, and python3
// is not assumed). It prints the report lines described in report.go on /dev/ttyS0 and
// powers the machine off. Indented with spaces, so that the user-data keeps it as a literal
// block.
const reportScript = `#!/bin/sh
# gpuforge boot check, written by the cloud-init seed of "gpuforge boot" (not part of the
# image) and run by gpuforge-boot-report.service. It checks the running machine against
# /etc/gpuforge/machine-image.json, prints one line per fact to the serial console,
#   GPUFORGE-BOOT <key> <ok|fail|skip> <value>
# between GPUFORGE-BOOT-BEGIN and GPUFORGE-BOOT-END, and powers the machine off.
#
# For tests on a fake machine: GPUFORGE_BOOT_ROOT stands for / (files only: commands come
# from GPUFORGE_BOOT_PATH), GPUFORGE_BOOT_CONSOLE receives the lines, and
# GPUFORGE_BOOT_POWEROFF=no keeps the machine on.

PATH=${GPUFORGE_BOOT_PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
LC_ALL=C
export PATH LC_ALL
root=${GPUFORGE_BOOT_ROOT:-}
manifest=$root/etc/gpuforge/machine-image.json
console=${GPUFORGE_BOOT_CONSOLE:-/dev/ttyS0}
if [ -z "${GPUFORGE_BOOT_CONSOLE:-}" ] && [ ! -w /dev/ttyS0 ]; then
    console=/dev/console
fi
exec 3>>"$console"

# report KEY STATUS VALUE...: one report line; the value is kept on one line.
report() {
    r_key=$1
    r_status=$2
    shift 2
    r_value=$(printf '%s' "$*" | tr '\t\r\n' '   ' | tr -s ' ')
    printf 'GPUFORGE-BOOT %s %s %s\n' "$r_key" "$r_status" "$r_value" >&3
}

# manifest_string KEY: the string value of KEY in the manifest, "" when absent. Its keys are
# unique, so a flat match is enough.
manifest_string() {
    [ -r "$manifest" ] || return 0
    tr -d '\r\n' <"$manifest" | sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p'
}

# has_driver: the manifest's driver is an object, not null.
has_driver() {
    [ -r "$manifest" ] && tr -d '\r\n' <"$manifest" | grep -q '"driver"[[:space:]]*:[[:space:]]*{'
}

mib() {
    echo "$(($1 / 1048576)) MiB"
}

check_manifest() {
    if [ ! -r "$manifest" ]; then
        report manifest fail "/etc/gpuforge/machine-image.json is missing: the image was not built by gpuforge"
        return
    fi
    schema=$(manifest_string schema)
    if [ "$schema" != gpuforge.machine-image/v1 ]; then
        report manifest fail "/etc/gpuforge/machine-image.json has schema \"$schema\", not gpuforge.machine-image/v1"
        return
    fi
    report manifest ok "$(manifest_string name)"
}

check_kernel() {
    want=$(manifest_string kernel)
    if [ -z "$want" ]; then
        report kernel fail "running $running; the manifest names no kernel"
    elif [ "$running" = "$want" ]; then
        report kernel ok "$running"
    else
        report kernel fail "running $running, but the image was built for $want"
    fi
}

# check_root sets rootsrc, the device of /, for check_root_size.
check_root() {
    set -- $(findmnt -no SOURCE,FSTYPE,OPTIONS / 2>/dev/null | tail -n 1)
    if [ $# -lt 3 ]; then
        set -- $(awk '$2 == "/" { r = $1 " " $3 " " $4 } END { print r }' "$root/proc/mounts")
    fi
    rootsrc=${1:-}
    case ",${3:-}," in
    *,rw,*) report root ok "$*" ;;
    *) report root fail "/ is not mounted read-write: ${*:-no mount of / found}" ;;
    esac
}

# fs_size DEV: "BYTES SLACK": the size of the filesystem on DEV (ext4: from its superblock,
# else what df says, which leaves out the filesystem's own overhead) and how far below its
# partition's size it may be and still fill it.
fs_size() {
    set -- $(dumpe2fs -h "$1" 2>/dev/null | sed -n 's/^Block count:[[:space:]]*//p; s/^Block size:[[:space:]]*//p')
    if [ $# -eq 2 ]; then
        echo "$(($1 * $2)) $((64 * 1048576))"
        return
    fi
    set -- $(df -P -k / | awk 'NR == 2 { print $2 }')
    [ $# -eq 1 ] && echo "$(($1 * 1024)) $(($1 * 1024 / 8))"
}

check_root_size() {
    dev=$(readlink -f "$rootsrc" 2>/dev/null)
    part=$root/sys/class/block/${dev##*/}
    if [ -z "$dev" ] || [ ! -r "$part/partition" ]; then
        report root_size skip "/ is on ${rootsrc:-an unknown device}, not on a disk partition"
        return
    fi
    diskdir=$(readlink -f "$part/..")
    start=$(cat "$part/start")
    size=$(cat "$part/size")
    disk_bytes=$(($(cat "$diskdir/size") * 512))
    for p in "$diskdir"/*/start; do
        [ -r "$p" ] || continue
        if [ "$(cat "$p")" -gt "$start" ]; then
            report root_size skip "$dev is not the last partition of ${diskdir##*/}, so growpart cannot grow it"
            return
        fi
    done
    part_bytes=$((size * 512))
    left=$((disk_bytes - (start + size) * 512))
    log=$(grep -E 'cc_growpart|cc_resizefs' "$root/var/log/cloud-init.log" 2>/dev/null |
        grep -iE 'resiz|grow|fail|error' | tail -n 1 | sed 's/^.*\]: //')
    if [ "$left" -ge $((64 * 1048576)) ]; then
        report root_size fail "$dev ($(mib $part_bytes)) ends $(mib $left) before the end of the $(mib $disk_bytes) disk: growpart did not grow it${log:+ (cloud-init.log: $log)}"
        return
    fi
    # resize_rootfs: noblock resizes in the background; give it time.
    i=0
    while :; do
        set -- $(fs_size "$dev")
        if [ $# -ne 2 ]; then
            report root_size skip "$dev grew to $(mib $part_bytes), but the size of its filesystem could not be read"
            return
        fi
        [ $((part_bytes - $1)) -ge "$2" ] && [ $i -lt 30 ] || break
        i=$((i + 1))
        sleep 1
    done
    if [ $((part_bytes - $1)) -ge "$2" ]; then
        report root_size fail "$dev grew to $(mib $part_bytes), but its filesystem is $(mib $1): resizefs did not run${log:+ (cloud-init.log: $log)}"
        return
    fi
    report root_size ok "$(mib $1) filesystem on $dev, grown to the end of the $(mib $disk_bytes) disk"
}

check_nvidia_module() {
    if ! has_driver; then
        report nvidia_module skip "the image has no NVIDIA driver"
        return
    fi
    module=$(manifest_string module)
    # Debian names the module's file nvidia-current.ko and loads it for "modprobe nvidia" with
    # an install rule, which modinfo does not follow: try that name too.
    tried=
    vermagic=
    for m in ${module:-nvidia} nvidia nvidia-current; do
        case ", $tried, " in
        *", $m, "*) continue ;;
        esac
        tried=${tried:+$tried, }$m
        vermagic=$(modinfo -k "$running" -F vermagic "$m" 2>/dev/null) && [ -n "$vermagic" ] && break
        vermagic=
    done
    if [ -z "$vermagic" ]; then
        report nvidia_module fail "no module ($tried) in /lib/modules/$running for the running kernel"
        return
    fi
    file=$(modinfo -k "$running" -F filename "$m" 2>/dev/null)
    version=$(modinfo -k "$running" -F version "$m" 2>/dev/null)
    want=$(manifest_string version)
    set -- $vermagic
    if [ "$1" != "$running" ]; then
        report nvidia_module fail "$file was built for $1, but the running kernel is $running"
    elif [ -n "$want" ] && [ -n "$version" ] && [ "$version" != "$want" ]; then
        report nvidia_module fail "$file is version $version, but the manifest says $want"
    else
        report nvidia_module ok "$file ${version:-(no version)} for $1"
    fi
}

check_docker() {
    if [ -z "$docker_kind" ]; then
        report docker skip "the image has no docker"
        return
    fi
    # docker may still be starting: try for up to 60 seconds.
    deadline=$(($(date +%s) + 60))
    while :; do
        if info=$(timeout 20 docker info --format '{{.ServerVersion}}' 2>&1); then
            state=$(systemctl is-active docker.service 2>/dev/null)
            if [ "$state" = active ]; then
                report docker ok "docker.service active, server $info ($docker_kind)"
                return
            fi
            info="docker info works, but docker.service is ${state:-unknown}"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 2
    done
    report docker fail "docker is not running after 60 s (docker.service: $(systemctl is-active docker.service 2>/dev/null)): $(printf '%s\n' "$info" | tail -n 1)"
}

check_nvidia_runtime() {
    case "$nvidia_kind" in
    "")
        report nvidia_runtime skip "the image has no NVIDIA container runtime"
        ;;
    legacy)
        names=$(timeout 20 docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>&1)
        case " $names " in
        *" nvidia "*) report nvidia_runtime ok "docker runtimes: $names" ;;
        *) report nvidia_runtime fail "docker has no nvidia runtime (runtimes: $names)" ;;
        esac
        ;;
    cdi)
        enabled=
        if [ -r "$root/etc/docker/daemon.json" ] &&
            tr -d ' \t\r\n' <"$root/etc/docker/daemon.json" | grep -q '"cdi":true'; then
            enabled=/etc/docker/daemon.json
        fi
        # Docker before 25 has no CDI of its own: the nvidia runtime in CDI mode injects the devices.
        if [ -z "$enabled" ] && [ -r "$root/etc/nvidia-container-runtime/config.toml" ] &&
            grep -Eq '^[[:space:]]*mode[[:space:]]*=[[:space:]]*"cdi"' "$root/etc/nvidia-container-runtime/config.toml"; then
            names=$(timeout 20 docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>&1)
            case " $names " in
            *" nvidia "*) enabled="nvidia runtime in CDI mode (/etc/nvidia-container-runtime/config.toml)" ;;
            esac
        fi
        dirs=$(timeout 20 docker info --format '{{json .CDISpecDirs}}' 2>/dev/null)
        case "$dirs" in
        "" | null | "[]") dirs= ;;
        esac
        specs=
        for f in "$root"/etc/cdi/* "$root"/var/run/cdi/*; do
            [ -f "$f" ] && specs="$specs ${f#$root}"
        done
        unit=
        for u in nvidia-cdi-refresh.service nvidia-cdi-refresh.path gpuforge-nvidia-cdi.service; do
            case "$(systemctl is-enabled "$u" 2>/dev/null)" in
            enabled | enabled-runtime)
                unit="$u enabled"
                break
                ;;
            esac
        done
        found="docker CDI spec dirs ${dirs:-(none)}; specs:${specs:- none yet (no GPU here)}"
        if [ -z "$enabled" ] && [ -z "$dirs" ]; then
            report nvidia_runtime fail "docker does not enable CDI (no \"cdi\": true in /etc/docker/daemon.json features, no nvidia runtime in CDI mode); $found"
        elif [ -z "$unit" ]; then
            report nvidia_runtime fail "no CDI refresh unit is enabled (nvidia-cdi-refresh.service, gpuforge-nvidia-cdi.service); $found"
        else
            report nvidia_runtime ok "CDI enabled (${enabled:-docker info}); $found; $unit"
        fi
        ;;
    *)
        report nvidia_runtime fail "the manifest's runtimes.nvidia is \"$nvidia_kind\", not cdi or legacy"
        ;;
    esac
}

# check_preload: the images the build put into the disk (/etc/gpuforge/preload.list, one
# reference a line) are in docker's store once gpuforge-preload.service has loaded them.
check_preload() {
    list="$root/etc/gpuforge/preload.list"
    if [ ! -s "$list" ]; then
        report preload skip "the image preloads no container images"
        return
    fi
    deadline=$(($(date +%s) + 300))
    while [ "$(systemctl show -p ActiveState --value gpuforge-preload.service 2>/dev/null)" = activating ] &&
        [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 2
    done
    found=
    missing=
    while IFS= read -r ref; do
        [ -n "$ref" ] || continue
        if timeout 30 docker image inspect "$ref" >/dev/null 2>&1; then
            found="$found $ref"
        else
            missing="$missing $ref"
        fi
    done <"$list"
    if [ -n "$missing" ]; then
        report preload fail "not in docker's store:$missing (gpuforge-preload.service: $(systemctl is-active gpuforge-preload.service 2>/dev/null))"
    else
        report preload ok "in docker's store:$found"
    fi
}

check_cloud_init() {
    out=$(cloud-init status --long 2>&1)
    rc=$?
    status=$(printf '%s\n' "$out" | sed -n 's/^status:[[:space:]]*//p' | head -n 1)
    extended=$(printf '%s\n' "$out" | sed -n 's/^extended_status:[[:space:]]*//p' | head -n 1)
    detail=$(printf '%s\n' "$out" | sed -n '/^detail:/{n;p;q;}')
    if [ "$status" = done ] && [ "$rc" -eq 0 ]; then
        case "$extended" in
        *degraded*) ;;
        *)
            report cloud_init ok "done${detail:+, $detail}"
            return
            ;;
        esac
    fi
    report cloud_init fail "status: ${extended:-${status:-unknown}} (exit $rc): $(printf '%s\n' "$out" | grep -vE '^(status|extended_status|boot_status_code|time|last_update):')"
}

check_ssh() {
    active=
    for u in ssh.service sshd.service ssh.socket; do
        if systemctl is-active --quiet "$u" 2>/dev/null; then
            active=$u
            break
        fi
    done
    btime=$(sed -n 's/^btime //p' "$root/proc/stat")
    keys=
    old=
    for k in "$root"/etc/ssh/ssh_host_*_key; do
        [ -f "$k" ] || continue
        t=${k##*/ssh_host_}
        t=${t%_key}
        keys="$keys $t"
        [ "$(stat -c %Y "$k")" -ge "${btime:-0}" ] || old="$old $t"
    done
    if [ -z "$active" ]; then
        report ssh fail "sshd is not running (ssh.service: $(systemctl is-active ssh.service 2>/dev/null))"
    elif [ -z "$keys" ]; then
        report ssh fail "$active is active, but /etc/ssh has no host keys"
    elif [ -n "$old" ]; then
        report ssh fail "host keys from before this boot:$old (the image ships host keys, so every machine made from it would share them)"
    else
        report ssh ok "$active active, host keys made on this boot:$keys"
    fi
}

# Fewer kernel messages on the console, so that they do not cut into the report's lines.
dmesg -n 1 2>/dev/null
cloud-init status --wait >/dev/null 2>&1

running=$(uname -r)
docker_kind=$(manifest_string docker)
nvidia_kind=$(manifest_string nvidia)
rootsrc=

printf 'GPUFORGE-BOOT-BEGIN v1\n' >&3
check_manifest
check_kernel
check_root
check_root_size
check_nvidia_module
check_docker
check_nvidia_runtime
check_preload
check_cloud_init
check_ssh
printf 'GPUFORGE-BOOT-END\n' >&3
exec 3>&-

if [ "${GPUFORGE_BOOT_POWEROFF:-yes}" != no ]; then
    systemctl poweroff --no-block
fi
`
