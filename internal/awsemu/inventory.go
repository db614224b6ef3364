package awsemu

import (
	"fmt"
	"maps"
	"sync"
)

// Snapshot is a snapshot as Inventory reports it.
type Snapshot struct {
	Region      string
	ID          string
	State       string // pending, completed, error
	Tags        map[string]string
	VolumeSize  int64 // GiB
	BlockCount  int   // blocks present (written, inherited or copied)
	Description string
	Encrypted   bool
	KmsKeyID    string
}

// Image is an AMI as Inventory reports it.
type Image struct {
	Region            string
	ID                string
	Name              string
	State             string // pending, available
	Tags              map[string]string
	SnapshotIDs       []string
	LaunchPermissions []string // account IDs, "all", organization and OU ARNs
	BootMode          string
	Architecture      string
	EnaSupport        bool
	ImdsSupport       string
	TpmSupport        string
	DeprecationTime   string
	SourceImageID     string
	SourceRegion      string
}

// Parameter is an SSM parameter as Inventory reports it.
type Parameter struct {
	Region   string
	Name     string
	Value    string
	Type     string
	DataType string
	Version  int64
}

// Object is an S3 object as Inventory reports it.
type Object struct {
	Bucket string
	Key    string
	Size   int64
}

// Upload is an S3 multipart upload neither completed nor aborted.
type Upload struct {
	Bucket   string
	Key      string
	UploadID string
}

// Inventory is everything the server holds, for leak checks.
type Inventory struct {
	Snapshots  []Snapshot
	Images     []Image
	Parameters []Parameter
	Objects    []Object
	Uploads    []Upload
}

// Inventory lists everything the server holds, sorted by region and ID (or name).
func (s *Server) Inventory() Inventory {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	var inv Inventory
	for _, name := range s.st.regionNames() {
		r := s.st.regions[name]
		for _, id := range sortedKeys(r.Snapshots) {
			sn := r.Snapshots[id]
			inv.Snapshots = append(inv.Snapshots, Snapshot{
				Region: name, ID: sn.ID, State: sn.State, Tags: cloneTags(sn.Tags), VolumeSize: sn.VolumeSize,
				BlockCount: sn.blocks.count(), Description: sn.Description, Encrypted: sn.Encrypted, KmsKeyID: sn.KmsKeyID,
			})
		}
		for _, id := range sortedKeys(r.Images) {
			im := r.Images[id]
			var perms []string
			for _, p := range im.LaunchPermissions {
				perms = append(perms, p.String())
			}
			inv.Images = append(inv.Images, Image{
				Region: name, ID: im.ID, Name: im.Name, State: im.State, Tags: cloneTags(im.Tags),
				SnapshotIDs: im.snapshotIDs(), LaunchPermissions: perms, BootMode: im.BootMode,
				Architecture: im.Architecture, EnaSupport: im.EnaSupport, ImdsSupport: im.ImdsSupport,
				TpmSupport: im.TpmSupport, DeprecationTime: im.DeprecationTime,
				SourceImageID: im.SourceImageID, SourceRegion: im.SourceRegion,
			})
		}
		for _, n := range sortedKeys(r.Parameters) {
			p := r.Parameters[n]
			inv.Parameters = append(inv.Parameters, Parameter{Region: name, Name: p.Name, Value: p.Value, Type: p.Type, DataType: p.DataType, Version: p.Version})
		}
	}
	for _, b := range sortedKeys(s.st.s3.Buckets) {
		bk := s.st.s3.Buckets[b]
		for _, k := range sortedKeys(bk.Objects) {
			inv.Objects = append(inv.Objects, Object{Bucket: b, Key: k, Size: bk.Objects[k].Size})
		}
	}
	for _, id := range sortedKeys(s.st.s3.Uploads) {
		u := s.st.s3.Uploads[id]
		inv.Uploads = append(inv.Uploads, Upload{Bucket: u.Bucket, Key: u.Key, UploadID: id})
	}
	return inv
}

// cloneTags copies tags; the copy is never nil.
func cloneTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	maps.Copy(out, m)
	return out
}

// WriteSnapshot reconstructs a completed snapshot as a sparse raw disk file of its volume size:
// blocks never written are holes.
func (s *Server) WriteSnapshot(region, snapshotID, path string) error {
	s.mu.Lock()
	s.advance()
	r := s.st.regions[region]
	var sn *snapshot
	if r != nil {
		sn = r.Snapshots[snapshotID]
	}
	s.mu.Unlock()
	if sn == nil {
		return fmt.Errorf("awsemu: no snapshot %s in %s", snapshotID, region)
	}
	if sn.State != "completed" {
		return fmt.Errorf("awsemu: snapshot %s in %s is %s, not completed", snapshotID, region, sn.State)
	}
	if err := sn.blocks.writeSparse(path, sn.VolumeSize<<30); err != nil {
		return fmt.Errorf("awsemu: write snapshot %s to %s: %w", snapshotID, path, err)
	}
	return nil
}

// Stats counts requests, rejections and PutSnapshotBlock payload bytes.
type Stats struct {
	// Requests counts the requests per operation, as AWS names it.
	Requests map[string]int
	// BlockBytes is the sum of the block data PutSnapshotBlock accepted.
	BlockBytes int64
	// Rejected counts per operation the requests that did not succeed: error answers (injected
	// or not), connections reset by a fault, and aws:ec2:image parameters dropped by their
	// asynchronous validation. Requests refused while crashed count under "".
	Rejected map[string]int
}

type statsCounter struct {
	mu sync.Mutex
	st Stats
}

func (c *statsCounter) reset() {
	c.mu.Lock()
	c.st = Stats{Requests: map[string]int{}, Rejected: map[string]int{}}
	c.mu.Unlock()
}

func (c *statsCounter) request(op string) {
	c.mu.Lock()
	c.st.Requests[op]++
	c.mu.Unlock()
}

func (c *statsCounter) rejected(op string) {
	c.mu.Lock()
	c.st.Rejected[op]++
	c.mu.Unlock()
}

func (c *statsCounter) blockBytes(n int64) {
	c.mu.Lock()
	c.st.BlockBytes += n
	c.mu.Unlock()
}

// Stats returns a copy of the counters since Start.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return Stats{Requests: maps.Clone(s.stats.st.Requests), BlockBytes: s.stats.st.BlockBytes, Rejected: maps.Clone(s.stats.st.Rejected)}
}
