package awsemu

import (
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
)

// EC2 snapshot operations: DescribeSnapshots, DeleteSnapshot, ModifySnapshotAttribute,
// DescribeSnapshotAttribute, ImportSnapshot, DescribeImportSnapshotTasks.

func snapshotNotFound(id string) *apiError {
	return ec2Err("InvalidSnapshot.NotFound", fmt.Sprintf("The snapshot '%s' does not exist.", id))
}

func checkSnapshotID(id string) *apiError {
	if !snapIDRE.MatchString(id) {
		return ec2Err("InvalidSnapshotID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"snap-...\")", id))
	}
	return nil
}

func (r *region) snapshot(id string) (*snapshot, *apiError) {
	if err := checkSnapshotID(id); err != nil {
		return nil, err
	}
	sn, ok := r.Snapshots[id]
	if !ok {
		return nil, snapshotNotFound(id)
	}
	return sn, nil
}

type xmlSnapshot struct {
	SnapshotID    string   `xml:"snapshotId"`
	VolumeID      string   `xml:"volumeId"`
	Status        string   `xml:"status"`
	StatusMessage string   `xml:"statusMessage,omitempty"`
	StartTime     string   `xml:"startTime"`
	Progress      string   `xml:"progress"`
	OwnerID       string   `xml:"ownerId"`
	VolumeSize    int64    `xml:"volumeSize"`
	Description   string   `xml:"description"`
	Encrypted     bool     `xml:"encrypted"`
	KmsKeyID      string   `xml:"kmsKeyId,omitempty"`
	TagSet        []xmlTag `xml:"tagSet>item"`
	StorageTier   string   `xml:"storageTier"`
}

func (s *Server) xmlSnapshot(sn *snapshot) xmlSnapshot {
	progress := "0%"
	if sn.State == "completed" {
		progress = "100%"
	}
	return xmlSnapshot{
		SnapshotID: sn.ID, VolumeID: "vol-ffffffff", Status: sn.State, StatusMessage: sn.StatusMessage,
		StartTime: ec2Time(sn.StartTime), Progress: progress, OwnerID: s.cfg.accountID, VolumeSize: sn.VolumeSize,
		Description: sn.Description, Encrypted: sn.Encrypted, KmsKeyID: sn.KmsKeyID, TagSet: xmlTags(sn.Tags),
		StorageTier: "standard",
	}
}

func (s *Server) snapshotAttr(sn *snapshot, name string) ([]string, bool) {
	if v, ok := tagAttr(sn.Tags, name); ok {
		return v, true
	}
	one := func(v string) ([]string, bool) { return []string{v}, true }
	switch name {
	case "snapshot-id":
		return one(sn.ID)
	case "status":
		return one(sn.State)
	case "owner-id":
		return one(s.cfg.accountID)
	case "description":
		return one(sn.Description)
	case "volume-size":
		return one(strconv.FormatInt(sn.VolumeSize, 10))
	case "volume-id":
		return one("vol-ffffffff")
	case "encrypted":
		return one(boolStr(sn.Encrypted))
	case "kms-key-id":
		return one(sn.KmsKeyID)
	case "start-time":
		return one(ec2Time(sn.StartTime))
	case "storage-tier":
		return one("standard")
	case "progress":
		return one(s.xmlSnapshot(sn).Progress)
	}
	return nil, false
}

func (s *Server) describeSnapshots(c *call) *apiError {
	f := c.form
	ids := f.list("SnapshotId")
	for _, id := range ids {
		if err := checkSnapshotID(id); err != nil {
			return err
		}
	}
	owners := f.list("Owner")
	filters := f.filters("Filter")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	for _, id := range ids {
		if _, ok := r.Snapshots[id]; !ok {
			return snapshotNotFound(id)
		}
	}
	type resp struct {
		ec2Meta
		Snapshots []xmlSnapshot `xml:"snapshotSet>item"`
	}
	out := &resp{}
	if !s.ownerMatches(owners) {
		return ec2OK(c, out)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, id := range sortedKeys(r.Snapshots) {
		sn := r.Snapshots[id]
		if len(ids) > 0 && !want[id] {
			continue
		}
		ok, err := matchFilters(filters, func(name string) ([]string, bool) { return s.snapshotAttr(sn, name) })
		if err != nil {
			return err
		}
		if ok {
			out.Snapshots = append(out.Snapshots, s.xmlSnapshot(sn))
		}
	}
	return ec2OK(c, out)
}

func (s *Server) deleteSnapshot(c *call) *apiError {
	id := c.form.get("SnapshotId")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	sn, aerr := r.snapshot(id)
	if aerr != nil {
		return aerr
	}
	if im := r.imageUsing(id); im != nil {
		return ec2Err("InvalidSnapshot.InUse", fmt.Sprintf("The snapshot %s is currently in use by %s", id, im.ID))
	}
	delete(r.Snapshots, id)
	sn.blocks.remove()
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}

func (f form) volumePermissions(prefix string) []string {
	var out []string
	for _, i := range f.indexes(prefix) {
		p := fmt.Sprintf("%s.%d.", prefix, i)
		if u := f.get(p + "UserId"); u != "" {
			out = append(out, u)
		}
		if g := f.get(p + "Group"); g != "" {
			out = append(out, g)
		}
	}
	return out
}

func (s *Server) modifySnapshotAttribute(c *call) *apiError {
	f := c.form
	attr := f.get("Attribute")
	if attr != "" && attr != "createVolumePermission" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter attribute is invalid. Only createVolumePermission can be modified.", attr))
	}
	add := f.volumePermissions("CreateVolumePermission.Add")
	remove := f.volumePermissions("CreateVolumePermission.Remove")
	flat := append(f.list("UserId"), f.list("UserGroup")...)
	if len(flat) > 0 {
		switch f.get("OperationType") {
		case "add":
			add = append(add, flat...)
		case "remove":
			remove = append(remove, flat...)
		default:
			return ec2Err("MissingParameter", "The request must contain the parameter OperationType (add or remove)")
		}
	}
	if len(add) == 0 && len(remove) == 0 {
		return ec2Err("MissingParameter", "The request must contain a createVolumePermission modification")
	}
	for _, p := range append(append([]string{}, add...), remove...) {
		if p != "all" && !accountIDRE.MatchString(p) {
			return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter userId is invalid.", p))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	sn, aerr := r.snapshot(f.get("SnapshotId"))
	if aerr != nil {
		return aerr
	}
	for _, p := range add {
		if p == "all" && sn.Encrypted {
			return ec2Err("InvalidParameterValue", "Encrypted snapshots cannot be made public.")
		}
	}
	for _, p := range remove {
		kept := sn.VolumePerms[:0]
		for _, q := range sn.VolumePerms {
			if q != p {
				kept = append(kept, q)
			}
		}
		sn.VolumePerms = kept
	}
	for _, p := range add {
		dup := false
		for _, q := range sn.VolumePerms {
			dup = dup || q == p
		}
		if !dup {
			sn.VolumePerms = append(sn.VolumePerms, p)
		}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}

func (s *Server) describeSnapshotAttribute(c *call) *apiError {
	type xmlPerm struct {
		UserID string `xml:"userId,omitempty"`
		Group  string `xml:"group,omitempty"`
	}
	type resp struct {
		ec2Meta
		SnapshotID string    `xml:"snapshotId"`
		Perms      []xmlPerm `xml:"createVolumePermission>item"`
	}
	attr := c.form.get("Attribute")
	if attr != "createVolumePermission" && attr != "productCodes" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter attribute is invalid.", attr))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	sn, aerr := r.snapshot(c.form.get("SnapshotId"))
	if aerr != nil {
		return aerr
	}
	out := &resp{SnapshotID: sn.ID}
	if attr == "createVolumePermission" {
		for _, p := range sn.VolumePerms {
			if p == "all" {
				out.Perms = append(out.Perms, xmlPerm{Group: p})
			} else {
				out.Perms = append(out.Perms, xmlPerm{UserID: p})
			}
		}
	}
	return ec2OK(c, out)
}

// ImportSnapshot converts an S3 object into a snapshot. Only RAW disk images are converted; the
// task of any other format ends deleted with a ClientError, as a failed conversion does.

type xmlUserBucket struct {
	S3Bucket string `xml:"s3Bucket"`
	S3Key    string `xml:"s3Key"`
}

type xmlSnapshotTaskDetail struct {
	Description   string         `xml:"description,omitempty"`
	DiskImageSize float64        `xml:"diskImageSize,omitempty"`
	Encrypted     bool           `xml:"encrypted"`
	Format        string         `xml:"format"`
	KmsKeyID      string         `xml:"kmsKeyId,omitempty"`
	Progress      string         `xml:"progress,omitempty"`
	SnapshotID    string         `xml:"snapshotId,omitempty"`
	Status        string         `xml:"status"`
	StatusMessage string         `xml:"statusMessage,omitempty"`
	UserBucket    *xmlUserBucket `xml:"userBucket"`
}

type xmlImportTask struct {
	ImportTaskID string                `xml:"importTaskId"`
	Description  string                `xml:"description,omitempty"`
	Detail       xmlSnapshotTaskDetail `xml:"snapshotTaskDetail"`
	TagSet       []xmlTag              `xml:"tagSet>item"`
}

func (s *Server) xmlImportTask(t *importTask) xmlImportTask {
	d := xmlSnapshotTaskDetail{
		Description: t.Description, DiskImageSize: float64(t.DiskImageSize), Encrypted: t.Encrypted,
		Format: t.Format, KmsKeyID: t.KmsKeyID, Status: t.Status, StatusMessage: t.StatusMessage,
		UserBucket: &xmlUserBucket{t.Bucket, t.Key},
	}
	switch t.Status {
	case "active":
		total := t.DoneAt.Sub(t.Created)
		pct := 0
		if total > 0 {
			pct = int(100 * s.now().Sub(t.Created) / total)
		}
		pct = min(max(pct, 0), 99)
		d.Progress = strconv.Itoa(pct)
		switch {
		case pct < 30:
			d.StatusMessage = "pending"
		case pct < 60:
			d.StatusMessage = "downloading/converting"
		default:
			d.StatusMessage = "validated"
		}
	case "completed":
		d.SnapshotID = t.SnapshotID
	}
	return xmlImportTask{ImportTaskID: t.ID, Description: t.Description, Detail: d, TagSet: xmlTags(t.Tags)}
}

func (s *Server) importSnapshot(c *call) *apiError {
	f := c.form
	if f.get("DiskContainer.Url") != "" {
		return ec2Err("InvalidParameterValue", "awsemu imports from DiskContainer.UserBucket only, not from a URL")
	}
	bucket, key := f.get("DiskContainer.UserBucket.S3Bucket"), f.get("DiskContainer.UserBucket.S3Key")
	if bucket == "" || key == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter DiskContainer.UserBucket (S3Bucket and S3Key)")
	}
	format := strings.ToUpper(f.get("DiskContainer.Format"))
	switch format {
	case "RAW", "VHD", "VMDK":
	case "":
		return ec2Err("MissingParameter", "The request must contain the parameter DiskContainer.Format")
	default:
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter DiskContainer.Format is invalid.", format))
	}
	encrypted, _ := f.boolean("Encrypted")
	kms := f.get("KmsKeyId")
	if kms != "" && !encrypted {
		return ec2Err("InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
	}
	specs, aerr := f.tagSpecs("import-snapshot-task")
	if aerr != nil {
		return aerr
	}
	desc := f.get("Description")
	if desc == "" {
		desc = f.get("DiskContainer.Description")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	token := f.get("ClientToken")
	if token != "" {
		if t, ok := r.Tokens["ImportSnapshot/"+token]; ok {
			if task, ok := r.ImportTasks[t.Resource]; ok {
				return s.importSnapshotReply(c, task)
			}
		}
	}
	now := s.now()
	t := &importTask{
		ID: newID("import-snap-"), Description: desc, Bucket: bucket, Key: key, Format: format,
		Encrypted: encrypted, KmsKeyID: kms, Tags: maps.Clone(specs["import-snapshot-task"]),
		Created: now, DoneAt: now.Add(s.cfg.copyDelay), Status: "active",
	}
	if encrypted && kms == "" {
		t.KmsKeyID = s.defaultKMSKey(c.region)
	}
	if err := s.convertImport(c.region, t); err != nil {
		return internalError("ec2", err)
	}
	r.ImportTasks[t.ID] = t
	if token != "" {
		r.Tokens["ImportSnapshot/"+token] = clientToken{Op: "ImportSnapshot", Resource: t.ID}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return s.importSnapshotReply(c, t)
}

func (s *Server) importSnapshotReply(c *call, t *importTask) *apiError {
	type resp struct {
		ec2Meta
		xmlImportTask
	}
	x := s.xmlImportTask(t)
	x.Detail.StatusMessage, x.Detail.Progress = "pending", ""
	return ec2OK(c, &resp{xmlImportTask: x})
}

// convertImport reads the S3 object into the task's snapshot now; the snapshot appears when the
// task completes. A task that cannot convert records why it will fail.
func (s *Server) convertImport(regionName string, t *importTask) error {
	bk := s.st.s3.Buckets[t.Bucket]
	switch {
	case bk == nil:
		t.Failure = fmt.Sprintf("ClientError: Unable to access the S3 bucket %s: the bucket does not exist", t.Bucket)
		return nil
	case bk.Region != regionName:
		t.Failure = fmt.Sprintf("ClientError: The S3 bucket %s is in %s; it must be in the Region of the import, %s", t.Bucket, bk.Region, regionName)
		return nil
	}
	obj := bk.Objects[t.Key]
	if obj == nil {
		t.Failure = fmt.Sprintf("ClientError: Unable to read the S3 object s3://%s/%s: the object does not exist", t.Bucket, t.Key)
		return nil
	}
	t.DiskImageSize = obj.Size
	if t.Format != "RAW" {
		t.Failure = fmt.Sprintf("ClientError: Disk validation failed [awsemu converts only RAW disk images, not %s]", t.Format)
		return nil
	}
	if obj.Size == 0 {
		t.Failure = "ClientError: Disk validation failed [the disk image is empty]"
		return nil
	}
	sn := &snapshot{
		ID: newID("snap-"), State: "pending", VolumeSize: (obj.Size + 1<<30 - 1) >> 30, StartTime: t.Created,
		Origin: "import", Sealed: true, CompleteAt: t.DoneAt, Encrypted: t.Encrypted, KmsKeyID: t.KmsKeyID,
		Description: fmt.Sprintf("Created by AWS-VMImport service for %s", t.ID),
	}
	bs, err := openBlockSet(s.st.snapshotPath(regionName, sn.ID))
	if err != nil {
		return err
	}
	sn.blocks = bs
	file, err := os.Open(s.st.s3.objectPath(t.Bucket, t.Key))
	if err != nil {
		bs.remove()
		return err
	}
	defer file.Close()
	if _, err := bs.writeBlocksFrom(file); err != nil {
		bs.remove()
		return err
	}
	bs.seal()
	t.Snapshot = sn
	t.SnapshotID = sn.ID
	return nil
}

func (s *Server) describeImportSnapshotTasks(c *call) *apiError {
	ids := c.form.list("ImportTaskId")
	filters := c.form.filters("Filters")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	for _, id := range ids {
		if !strings.HasPrefix(id, "import-snap-") {
			return ec2Err("InvalidConversionTaskId.Malformed", fmt.Sprintf("The import task ID '%s' is malformed", id))
		}
		if _, ok := r.ImportTasks[id]; !ok {
			return ec2Err("InvalidConversionTaskId", fmt.Sprintf("The import task '%s' does not exist", id))
		}
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	type resp struct {
		ec2Meta
		Tasks []xmlImportTask `xml:"importSnapshotTaskSet>item"`
	}
	out := &resp{}
	for _, id := range sortedKeys(r.ImportTasks) {
		t := r.ImportTasks[id]
		if len(ids) > 0 && !want[id] {
			continue
		}
		ok, err := matchFilters(filters, func(name string) ([]string, bool) {
			if v, ok := tagAttr(t.Tags, name); ok {
				return v, true
			}
			switch name {
			case "task-state":
				return []string{t.Status}, true
			case "import-task-id":
				return []string{t.ID}, true
			}
			return nil, false
		})
		if err != nil {
			return err
		}
		if ok {
			out.Tasks = append(out.Tasks, s.xmlImportTask(t))
		}
	}
	return ec2OK(c, out)
}
