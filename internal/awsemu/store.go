package awsemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"
)

// On disk, under the server's directory:
//
//	regions/<region>/state.json            snapshots, images, parameters, import tasks, tokens
//	regions/<region>/snapshots/<id>.blocks block data at index*512KiB (sparse)
//	regions/<region>/snapshots/<id>.idx    log of the blocks written and their SHA-256
//	s3/state.json                          buckets, objects, multipart uploads
//	s3/data/<bucket>/<sha256 of key>       object bytes
//	s3/uploads/<upload id>/<part number>   part bytes

// state is everything the server holds.
type state struct {
	dir     string
	regions map[string]*region
	s3      *s3State
}

// region is the state of one region, saved as one JSON file.
type region struct {
	Name        string                 `json:"name"`
	Snapshots   map[string]*snapshot   `json:"snapshots"`
	Images      map[string]*image      `json:"images"`
	Parameters  map[string]*parameter  `json:"parameters"`
	ImportTasks map[string]*importTask `json:"importTasks"`
	// Tokens maps an operation's ClientToken to what the first request with it created.
	Tokens map[string]clientToken `json:"tokens"`
}

type clientToken struct {
	Op       string `json:"op"`
	Params   string `json:"params"` // the request parameters the token was first used with
	Resource string `json:"resource"`
}

type snapshot struct {
	ID            string            `json:"id"`
	State         string            `json:"state"` // pending, completed, error
	StatusMessage string            `json:"statusMessage,omitempty"`
	VolumeSize    int64             `json:"volumeSize"` // GiB
	Description   string            `json:"description,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	Encrypted     bool              `json:"encrypted,omitempty"`
	KmsKeyID      string            `json:"kmsKeyId,omitempty"`
	StartTime     time.Time         `json:"startTime"`
	// Origin says how the snapshot came to be: "ebs" (StartSnapshot), "copy", "import".
	Origin         string    `json:"origin"`
	ParentID       string    `json:"parentId,omitempty"`
	Timeout        int       `json:"timeout,omitempty"` // minutes, EBS direct
	Sealed         bool      `json:"sealed,omitempty"`  // CompleteSnapshot accepted
	CompleteAt     time.Time `json:"completeAt,omitempty"`
	ChangedBlocks  int       `json:"changedBlocks,omitempty"`
	VolumePerms    []string  `json:"createVolumePermissions,omitempty"` // account IDs or "all"
	SourceSnapshot string    `json:"sourceSnapshot,omitempty"`

	lastActivity time.Time
	blocks       *blockSet
}

type blockDevice struct {
	DeviceName          string `json:"deviceName"`
	SnapshotID          string `json:"snapshotId,omitempty"`
	VolumeSize          int64  `json:"volumeSize,omitempty"`
	VolumeType          string `json:"volumeType,omitempty"`
	Iops                int64  `json:"iops,omitempty"`
	Throughput          int64  `json:"throughput,omitempty"`
	Encrypted           *bool  `json:"encrypted,omitempty"`
	KmsKeyID            string `json:"kmsKeyId,omitempty"`
	DeleteOnTermination bool   `json:"deleteOnTermination"`
	VirtualName         string `json:"virtualName,omitempty"`
	NoDevice            bool   `json:"noDevice,omitempty"`
}

type launchPermission struct {
	UserID                string `json:"userId,omitempty"`
	Group                 string `json:"group,omitempty"`
	OrganizationArn       string `json:"organizationArn,omitempty"`
	OrganizationalUnitArn string `json:"organizationalUnitArn,omitempty"`
}

func (p launchPermission) String() string {
	switch {
	case p.UserID != "":
		return p.UserID
	case p.Group != "":
		return p.Group
	case p.OrganizationArn != "":
		return p.OrganizationArn
	default:
		return p.OrganizationalUnitArn
	}
}

type image struct {
	ID                 string             `json:"id"`
	Name               string             `json:"name"`
	Description        string             `json:"description,omitempty"`
	State              string             `json:"state"` // pending, available, failed
	Architecture       string             `json:"architecture"`
	BootMode           string             `json:"bootMode,omitempty"`
	EnaSupport         bool               `json:"enaSupport,omitempty"`
	SriovNetSupport    string             `json:"sriovNetSupport,omitempty"`
	ImdsSupport        string             `json:"imdsSupport,omitempty"`
	TpmSupport         string             `json:"tpmSupport,omitempty"`
	UefiData           string             `json:"uefiData,omitempty"`
	RootDeviceName     string             `json:"rootDeviceName,omitempty"`
	VirtualizationType string             `json:"virtualizationType"`
	BlockDevices       []blockDevice      `json:"blockDevices"`
	Tags               map[string]string  `json:"tags,omitempty"`
	LaunchPermissions  []launchPermission `json:"launchPermissions,omitempty"`
	CreationDate       time.Time          `json:"creationDate"`
	AvailableAt        time.Time          `json:"availableAt"`
	DeprecationTime    string             `json:"deprecationTime,omitempty"`
	SourceImageID      string             `json:"sourceImageId,omitempty"`
	SourceRegion       string             `json:"sourceRegion,omitempty"`
}

func (im *image) snapshotIDs() []string {
	var ids []string
	for _, bd := range im.BlockDevices {
		if bd.SnapshotID != "" {
			ids = append(ids, bd.SnapshotID)
		}
	}
	return ids
}

func (im *image) public() bool {
	for _, p := range im.LaunchPermissions {
		if p.Group == "all" {
			return true
		}
	}
	return false
}

type parameterVersion struct {
	Value        string    `json:"value"`
	Version      int64     `json:"version"`
	LastModified time.Time `json:"lastModified"`
}

type parameter struct {
	Name         string             `json:"name"`
	Type         string             `json:"type"`
	DataType     string             `json:"dataType"`
	Value        string             `json:"value"`
	Description  string             `json:"description,omitempty"`
	Version      int64              `json:"version"`
	Tier         string             `json:"tier"`
	LastModified time.Time          `json:"lastModified"`
	Tags         map[string]string  `json:"tags,omitempty"`
	History      []parameterVersion `json:"history,omitempty"` // earlier versions, oldest first
}

type importTask struct {
	ID            string            `json:"id"`
	Description   string            `json:"description,omitempty"`
	Bucket        string            `json:"bucket"`
	Key           string            `json:"key"`
	Format        string            `json:"format"`
	Encrypted     bool              `json:"encrypted,omitempty"`
	KmsKeyID      string            `json:"kmsKeyId,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	Created       time.Time         `json:"created"`
	DoneAt        time.Time         `json:"doneAt"`
	Status        string            `json:"status"` // active, completed, deleted
	StatusMessage string            `json:"statusMessage,omitempty"`
	DiskImageSize int64             `json:"diskImageSize"`
	// Failure is the StatusMessage the task ends with when it cannot complete.
	Failure    string `json:"failure,omitempty"`
	SnapshotID string `json:"snapshotId,omitempty"`
	// Snapshot is the converted snapshot, held back until the task completes.
	Snapshot *snapshot `json:"snapshot,omitempty"`
}

var regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

func validRegion(name string) bool { return regionRE.MatchString(name) }

func newRegion(name string) *region {
	return &region{
		Name:        name,
		Snapshots:   map[string]*snapshot{},
		Images:      map[string]*image{},
		Parameters:  map[string]*parameter{},
		ImportTasks: map[string]*importTask{},
		Tokens:      map[string]clientToken{},
	}
}

// region returns the state of a region, creating it on first use.
func (st *state) region(name string) *region {
	r, ok := st.regions[name]
	if !ok {
		r = newRegion(name)
		st.regions[name] = r
	}
	return r
}

func (st *state) regionDir(name string) string { return filepath.Join(st.dir, "regions", name) }

func (st *state) snapshotPath(regionName, id string) string {
	return filepath.Join(st.regionDir(regionName), "snapshots", id)
}

func loadState(dir, account string) (*state, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	st := &state{dir: dir, regions: map[string]*region{}}
	entries, err := os.ReadDir(filepath.Join(dir, "regions"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || !validRegion(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "regions", e.Name(), "state.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		r := newRegion(e.Name())
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		r.fillMaps()
		for _, sn := range r.Snapshots {
			if err := st.openBlocks(r.Name, sn); err != nil {
				return nil, err
			}
		}
		for _, t := range r.ImportTasks {
			if t.Snapshot != nil {
				if err := st.openBlocks(r.Name, t.Snapshot); err != nil {
					return nil, err
				}
			}
		}
		st.regions[r.Name] = r
	}
	st.s3, err = loadS3(dir)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (r *region) fillMaps() {
	if r.Snapshots == nil {
		r.Snapshots = map[string]*snapshot{}
	}
	if r.Images == nil {
		r.Images = map[string]*image{}
	}
	if r.Parameters == nil {
		r.Parameters = map[string]*parameter{}
	}
	if r.ImportTasks == nil {
		r.ImportTasks = map[string]*importTask{}
	}
	if r.Tokens == nil {
		r.Tokens = map[string]clientToken{}
	}
}

// openBlocks opens (or creates) the block files of a snapshot and replays its index.
func (st *state) openBlocks(regionName string, sn *snapshot) error {
	bs, err := openBlockSet(st.snapshotPath(regionName, sn.ID))
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID, err)
	}
	sn.blocks = bs
	sn.lastActivity = sn.StartTime
	if t := bs.modTime(); t.After(sn.lastActivity) {
		sn.lastActivity = t
	}
	if sn.Sealed || sn.State != "pending" {
		bs.seal()
	}
	return nil
}

// save writes a region's state file atomically.
func (st *state) save(r *region) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(st.regionDir(r.Name), "state.json"), b)
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (st *state) closeFiles() {
	for _, r := range st.regions {
		for _, sn := range r.Snapshots {
			sn.blocks.close()
		}
		for _, t := range r.ImportTasks {
			if t.Snapshot != nil {
				t.Snapshot.blocks.close()
			}
		}
	}
}

func (st *state) regionNames() []string {
	names := make([]string, 0, len(st.regions))
	for n := range st.regions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// advance applies the transitions that happen with time: images and copied snapshots become
// available, sealed snapshots complete, abandoned EBS direct snapshots time out, import tasks
// finish. It saves the regions it changed.
func (s *Server) advance() {
	now := s.now()
	for _, name := range s.st.regionNames() {
		r := s.st.regions[name]
		changed := false
		for _, sn := range r.Snapshots {
			switch {
			case sn.State != "pending":
			case sn.Sealed && !now.Before(sn.CompleteAt):
				sn.State = "completed"
				changed = true
			case sn.Origin == "ebs" && !sn.Sealed && sn.Timeout > 0 && now.Sub(sn.lastActivity) > time.Duration(sn.Timeout)*time.Minute:
				sn.State = "error"
				sn.StatusMessage = "The snapshot was not completed within its timeout"
				sn.blocks.seal()
				changed = true
			}
		}
		for _, im := range r.Images {
			if im.State == "pending" && !now.Before(im.AvailableAt) {
				im.State = "available"
				changed = true
			}
		}
		for _, t := range r.ImportTasks {
			if t.Status != "active" || now.Before(t.DoneAt) {
				continue
			}
			changed = true
			if t.Failure != "" {
				t.Status, t.StatusMessage = "deleted", t.Failure
				continue
			}
			t.Status, t.StatusMessage = "completed", ""
			if sn := t.Snapshot; sn != nil {
				sn.State = "completed"
				r.Snapshots[sn.ID] = sn
				t.Snapshot = nil
			}
		}
		if changed {
			_ = s.st.save(r)
		}
	}
}
