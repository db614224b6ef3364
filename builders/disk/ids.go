package disk

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// IDs are the identifiers a disk carries. Boot loaders, fstab and cloud-init find partitions
// and filesystems by them, so a reproducible image needs them fixed: see NewIDs.
type IDs struct {
	DiskGUID, ESPPartGUID, RootPartGUID string // GPT GUIDs, canonical lower-case form
	RootFSUUID                          string // ext4 UUID
	ESPVolumeID                         uint32 // FAT volume serial
}

// NewIDs returns the identifiers of the disk of the image name. With an epoch each of them is
// derived from sha256 of name, the epoch and what the identifier is for, so the same name and
// epoch give the same disk; without one they are random. UUIDs and GUIDs are RFC 4122 version 4
// (random) in form: their version and variant bits are set, the other 122 bits are the hash's.
func NewIDs(name string, epoch *time.Time) IDs {
	gen := func(purpose string) [16]byte {
		var b [16]byte
		if epoch == nil {
			// crypto/rand.Read never returns an error (Go 1.24 and later).
			rand.Read(b[:])
			return b
		}
		// NUL-separated: name can hold any text but NUL, so distinct inputs stay distinct.
		h := sha256.Sum256([]byte("gpuforge disk\x00" + purpose + "\x00" + name + "\x00" +
			strconv.FormatInt(epoch.UnixNano(), 10)))
		copy(b[:], h[:16])
		return b
	}
	vol := gen("esp-volume-id")
	return IDs{
		DiskGUID:     formatUUID(gen("disk-guid")),
		ESPPartGUID:  formatUUID(gen("esp-partition-guid")),
		RootPartGUID: formatUUID(gen("root-partition-guid")),
		RootFSUUID:   formatUUID(gen("root-filesystem-uuid")),
		ESPVolumeID:  binary.LittleEndian.Uint32(vol[:4]),
	}
}

// isZero reports whether no identifier is set.
func (ids IDs) isZero() bool { return ids == IDs{} }

// validate checks that every UUID parses.
func (ids IDs) validate() error {
	for _, f := range []struct{ name, v string }{
		{"DiskGUID", ids.DiskGUID},
		{"ESPPartGUID", ids.ESPPartGUID},
		{"RootPartGUID", ids.RootPartGUID},
		{"RootFSUUID", ids.RootFSUUID},
	} {
		if _, err := parseUUID(f.v); err != nil {
			return fmt.Errorf("IDs.%s: %w", f.name, err)
		}
	}
	return nil
}

// derivedUUID returns a version 4 UUID derived from the UUID base and purpose: ext4's directory
// hash seed comes from the filesystem UUID this way, so it is as reproducible as the UUID.
func derivedUUID(base, purpose string) string {
	h := sha256.Sum256([]byte("gpuforge disk\x00" + purpose + "\x00" + base))
	var b [16]byte
	copy(b[:], h[:16])
	return formatUUID(b)
}

// formatUUID sets the version (4) and variant (RFC 4122) bits of b and returns its canonical
// lower-case form.
func formatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// parseUUID parses the canonical 8-4-4-4-12 hexadecimal form, in either case.
func parseUUID(s string) ([16]byte, error) {
	var b [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return b, fmt.Errorf("%q is not a UUID (want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s)
	}
	hexDigits := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(b[:], []byte(hexDigits)); err != nil {
		return b, fmt.Errorf("%q is not a UUID: %w", s, err)
	}
	return b, nil
}
