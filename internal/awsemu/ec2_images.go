package awsemu

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// EC2 image operations: RegisterImage, DescribeImages, DeregisterImage, CopyImage,
// ModifyImageAttribute, DescribeImageAttribute, EnableImageDeprecation, DisableImageDeprecation.

var (
	amiNameRE    = regexp.MustCompile(`^[a-zA-Z0-9()\[\] ./\-'@_]{3,128}$`)
	amiIDRE      = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	snapIDRE     = regexp.MustCompile(`^snap-([0-9a-f]{8}|[0-9a-f]{17})$`)
	accountIDRE  = regexp.MustCompile(`^[0-9]{12}$`)
	volumeTypes  = map[string]bool{"standard": true, "io1": true, "io2": true, "gp2": true, "gp3": true, "sc1": true, "st1": true}
	architecture = map[string]bool{"i386": true, "x86_64": true, "arm64": true, "x86_64_mac": true, "arm64_mac": true}
)

func checkAMIName(name string) *apiError {
	if name == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter name")
	}
	if !amiNameRE.MatchString(name) {
		return ec2Err("InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/', '[', ']', ' ', '@', ''' and '_'")
	}
	return nil
}

func checkAMIID(id string) *apiError {
	if !amiIDRE.MatchString(id) {
		return ec2Err("InvalidAMIID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"ami-...\")", id))
	}
	return nil
}

func amiNotFound(ids ...string) *apiError {
	return ec2Err("InvalidAMIID.NotFound", fmt.Sprintf("The image id '[%s]' does not exist", strings.Join(ids, ", ")))
}

func (r *region) imageByName(name string) *image {
	for _, im := range r.Images {
		if im.Name == name {
			return im
		}
	}
	return nil
}

// image finds an image of the region by ID.
func (r *region) image(id string) (*image, *apiError) {
	if err := checkAMIID(id); err != nil {
		return nil, err
	}
	im, ok := r.Images[id]
	if !ok {
		return nil, amiNotFound(id)
	}
	return im, nil
}

func (s *Server) registerImage(c *call) *apiError {
	f := c.form
	name := f.get("Name")
	if err := checkAMIName(name); err != nil {
		return err
	}
	if f.get("ImageLocation") != "" {
		return ec2Err("InvalidParameterValue", "awsemu registers EBS-backed AMIs only; ImageLocation (instance store) is not supported")
	}
	im := &image{
		Name:               name,
		Description:        f.get("Description"),
		Architecture:       f.get("Architecture"),
		BootMode:           f.get("BootMode"),
		SriovNetSupport:    f.get("SriovNetSupport"),
		ImdsSupport:        f.get("ImdsSupport"),
		TpmSupport:         f.get("TpmSupport"),
		UefiData:           f.get("UefiData"),
		RootDeviceName:     f.get("RootDeviceName"),
		VirtualizationType: f.get("VirtualizationType"),
	}
	im.EnaSupport, _ = f.boolean("EnaSupport")
	if im.Architecture == "" {
		im.Architecture = "i386" // the documented default for EBS-backed AMIs
	}
	if !architecture[im.Architecture] {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter architecture is invalid.", im.Architecture))
	}
	if im.VirtualizationType == "" {
		im.VirtualizationType = "paravirtual" // the documented default
	}
	if im.VirtualizationType != "hvm" && im.VirtualizationType != "paravirtual" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter virtualizationType is invalid.", im.VirtualizationType))
	}
	switch im.BootMode {
	case "", "legacy-bios", "uefi", "uefi-preferred":
	default:
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter bootMode is invalid.", im.BootMode))
	}
	if im.SriovNetSupport != "" && im.SriovNetSupport != "simple" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter sriovNetSupport is invalid.", im.SriovNetSupport))
	}
	if im.ImdsSupport != "" && im.ImdsSupport != "v2.0" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter imdsSupport is invalid.", im.ImdsSupport))
	}
	if im.TpmSupport != "" && im.TpmSupport != "v2.0" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter tpmSupport is invalid.", im.TpmSupport))
	}
	if im.TpmSupport != "" && im.BootMode != "uefi" && im.BootMode != "uefi-preferred" {
		return ec2Err("InvalidParameterCombination", "NitroTPM (TpmSupport v2.0) requires the uefi or uefi-preferred boot mode.")
	}
	if im.VirtualizationType != "hvm" && (im.EnaSupport || im.SriovNetSupport != "") {
		return ec2Err("InvalidParameterCombination", "Enhanced networking (EnaSupport, SriovNetSupport) is supported only for HVM AMIs.")
	}
	specs, aerr := f.tagSpecs("image")
	if aerr != nil {
		return aerr
	}
	im.Tags = specs["image"]

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)

	bdms, aerr := s.parseBlockDeviceMappings(r, f)
	if aerr != nil {
		return aerr
	}
	im.BlockDevices = bdms
	if im.RootDeviceName == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter rootDeviceName")
	}
	rootOK := false
	for _, bd := range bdms {
		rootOK = rootOK || (bd.DeviceName == im.RootDeviceName && bd.SnapshotID != "")
	}
	if !rootOK {
		return ec2Err("InvalidBlockDeviceMapping", fmt.Sprintf("The root device name %s has no EBS snapshot among the block device mappings.", im.RootDeviceName))
	}
	if other := r.imageByName(name); other != nil {
		return ec2Err("InvalidAMIName.Duplicate", fmt.Sprintf("AMI name %s is already in use by AMI %s", name, other.ID))
	}
	now := s.now()
	im.ID = newID("ami-")
	im.CreationDate = now
	im.AvailableAt = now.Add(s.cfg.copyDelay)
	im.State = "available"
	if s.cfg.copyDelay > 0 {
		im.State = "pending"
	}
	r.Images[im.ID] = im
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	type resp struct {
		ec2Meta
		ImageID string `xml:"imageId"`
	}
	return ec2OK(c, &resp{ImageID: im.ID})
}

// parseBlockDeviceMappings reads BlockDeviceMapping.N and checks the snapshots they name.
func (s *Server) parseBlockDeviceMappings(r *region, f form) ([]blockDevice, *apiError) {
	var out []blockDevice
	seen := map[string]bool{}
	for _, i := range f.indexes("BlockDeviceMapping") {
		p := fmt.Sprintf("BlockDeviceMapping.%d.", i)
		bd := blockDevice{DeviceName: f.get(p + "DeviceName"), VirtualName: f.get(p + "VirtualName"), DeleteOnTermination: true}
		if bd.DeviceName == "" {
			return nil, ec2Err("MissingParameter", "The request must contain the parameter BlockDeviceMapping.DeviceName")
		}
		if seen[bd.DeviceName] {
			return nil, ec2Err("InvalidBlockDeviceMapping", fmt.Sprintf("The device '%s' is used in more than one block-device mapping", bd.DeviceName))
		}
		seen[bd.DeviceName] = true
		if f.has(p + "NoDevice") {
			bd.NoDevice = true
		}
		eb := p + "Ebs."
		hasEBS := false
		for k := range f {
			hasEBS = hasEBS || strings.HasPrefix(k, eb)
		}
		if hasEBS {
			bd.SnapshotID = f.get(eb + "SnapshotId")
			bd.VolumeType = f.get(eb + "VolumeType")
			bd.KmsKeyID = f.get(eb + "KmsKeyId")
			if v, set := f.boolean(eb + "DeleteOnTermination"); set {
				bd.DeleteOnTermination = v
			}
			if v, set := f.boolean(eb + "Encrypted"); set {
				bd.Encrypted = &v
			}
			var err *apiError
			var set bool
			if bd.VolumeSize, set, err = f.integer(eb + "VolumeSize"); err != nil {
				return nil, err
			}
			if bd.Iops, _, err = f.integer(eb + "Iops"); err != nil {
				return nil, err
			}
			if bd.Throughput, _, err = f.integer(eb + "Throughput"); err != nil {
				return nil, err
			}
			if bd.VolumeType == "" {
				bd.VolumeType = "gp2"
			}
			if !volumeTypes[bd.VolumeType] {
				return nil, ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter volumeType is invalid.", bd.VolumeType))
			}
			if bd.Iops != 0 && bd.VolumeType != "io1" && bd.VolumeType != "io2" && bd.VolumeType != "gp3" {
				return nil, ec2Err("InvalidParameterCombination", fmt.Sprintf("The parameter iops is not supported for %s volumes.", bd.VolumeType))
			}
			if bd.Throughput != 0 && bd.VolumeType != "gp3" {
				return nil, ec2Err("InvalidParameterCombination", fmt.Sprintf("The parameter throughput is not supported for %s volumes.", bd.VolumeType))
			}
			if bd.VolumeType == "gp3" && bd.Iops != 0 && (bd.Iops < 3000 || bd.Iops > 80000) {
				return nil, ec2Err("InvalidParameterValue", fmt.Sprintf("The iops %d is out of range for gp3 volumes (3000-80000).", bd.Iops))
			}
			if bd.VolumeType == "gp3" && bd.Throughput != 0 && (bd.Throughput < 125 || bd.Throughput > 2000) {
				return nil, ec2Err("InvalidParameterValue", fmt.Sprintf("The throughput %d is out of range for gp3 volumes (125-2000).", bd.Throughput))
			}
			if bd.KmsKeyID != "" && (bd.Encrypted == nil || !*bd.Encrypted) {
				return nil, ec2Err("InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
			}
			if bd.SnapshotID != "" {
				if !snapIDRE.MatchString(bd.SnapshotID) {
					return nil, ec2Err("InvalidSnapshotID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"snap-...\")", bd.SnapshotID))
				}
				sn, ok := r.Snapshots[bd.SnapshotID]
				if !ok {
					return nil, ec2Err("InvalidSnapshot.NotFound", fmt.Sprintf("The snapshot '%s' does not exist.", bd.SnapshotID))
				}
				if sn.State != "completed" {
					return nil, ec2Err("IncorrectState", fmt.Sprintf("Snapshot '%s' is not in the completed state (%s).", sn.ID, stateWord(sn.State, sn.Sealed)))
				}
				if !set {
					bd.VolumeSize = sn.VolumeSize
				}
				if bd.VolumeSize < sn.VolumeSize {
					return nil, ec2Err("InvalidBlockDeviceMapping", fmt.Sprintf("Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB", bd.VolumeSize, sn.ID, sn.VolumeSize))
				}
				if sn.Encrypted {
					t := true
					bd.Encrypted = &t
					if bd.KmsKeyID == "" {
						bd.KmsKeyID = sn.KmsKeyID
					}
				}
			} else if !set {
				return nil, ec2Err("InvalidBlockDeviceMapping", fmt.Sprintf("The block device mapping of %s needs a snapshot ID or a volume size.", bd.DeviceName))
			}
			if bd.VolumeSize < 1 || bd.VolumeSize > 65536 {
				return nil, ec2Err("InvalidParameterValue", fmt.Sprintf("Volume size %d is out of range (1-65536 GiB).", bd.VolumeSize))
			}
		}
		out = append(out, bd)
	}
	return out, nil
}

type xmlEBS struct {
	SnapshotID          string `xml:"snapshotId,omitempty"`
	VolumeSize          int64  `xml:"volumeSize,omitempty"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	VolumeType          string `xml:"volumeType,omitempty"`
	Iops                int64  `xml:"iops,omitempty"`
	Throughput          int64  `xml:"throughput,omitempty"`
	Encrypted           *bool  `xml:"encrypted,omitempty"`
	KmsKeyID            string `xml:"kmsKeyId,omitempty"`
}

type xmlBDM struct {
	DeviceName  string  `xml:"deviceName"`
	VirtualName string  `xml:"virtualName,omitempty"`
	NoDevice    *string `xml:"noDevice,omitempty"`
	Ebs         *xmlEBS `xml:"ebs,omitempty"`
}

func xmlBDMs(bds []blockDevice) []xmlBDM {
	var out []xmlBDM
	for _, bd := range bds {
		x := xmlBDM{DeviceName: bd.DeviceName, VirtualName: bd.VirtualName}
		if bd.NoDevice {
			empty := ""
			x.NoDevice = &empty
		}
		if bd.SnapshotID != "" || bd.VolumeSize != 0 {
			x.Ebs = &xmlEBS{SnapshotID: bd.SnapshotID, VolumeSize: bd.VolumeSize, DeleteOnTermination: bd.DeleteOnTermination,
				VolumeType: bd.VolumeType, Iops: bd.Iops, Throughput: bd.Throughput, Encrypted: bd.Encrypted, KmsKeyID: bd.KmsKeyID}
		}
		out = append(out, x)
	}
	return out
}

type xmlStateReason struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type xmlImage struct {
	ImageID            string          `xml:"imageId"`
	ImageLocation      string          `xml:"imageLocation"`
	ImageState         string          `xml:"imageState"`
	ImageOwnerID       string          `xml:"imageOwnerId"`
	CreationDate       string          `xml:"creationDate"`
	IsPublic           bool            `xml:"isPublic"`
	Architecture       string          `xml:"architecture"`
	ImageType          string          `xml:"imageType"`
	Name               string          `xml:"name"`
	Description        string          `xml:"description,omitempty"`
	RootDeviceType     string          `xml:"rootDeviceType"`
	RootDeviceName     string          `xml:"rootDeviceName,omitempty"`
	BlockDeviceMapping []xmlBDM        `xml:"blockDeviceMapping>item"`
	VirtualizationType string          `xml:"virtualizationType"`
	TagSet             []xmlTag        `xml:"tagSet>item"`
	Hypervisor         string          `xml:"hypervisor"`
	EnaSupport         *bool           `xml:"enaSupport,omitempty"`
	SriovNetSupport    string          `xml:"sriovNetSupport,omitempty"`
	BootMode           string          `xml:"bootMode,omitempty"`
	ImdsSupport        string          `xml:"imdsSupport,omitempty"`
	TpmSupport         string          `xml:"tpmSupport,omitempty"`
	DeprecationTime    string          `xml:"deprecationTime,omitempty"`
	PlatformDetails    string          `xml:"platformDetails"`
	UsageOperation     string          `xml:"usageOperation"`
	SourceImageID      string          `xml:"sourceImageId,omitempty"`
	SourceImageRegion  string          `xml:"sourceImageRegion,omitempty"`
	StateReason        *xmlStateReason `xml:"stateReason,omitempty"`
}

func (s *Server) xmlImage(im *image) xmlImage {
	x := xmlImage{
		ImageID: im.ID, ImageLocation: s.cfg.accountID + "/" + im.Name, ImageState: im.State,
		ImageOwnerID: s.cfg.accountID, CreationDate: ec2Time(im.CreationDate), IsPublic: im.public(),
		Architecture: im.Architecture, ImageType: "machine", Name: im.Name, Description: im.Description,
		RootDeviceType: "ebs", RootDeviceName: im.RootDeviceName, BlockDeviceMapping: xmlBDMs(im.BlockDevices),
		VirtualizationType: im.VirtualizationType, TagSet: xmlTags(im.Tags), Hypervisor: "xen",
		SriovNetSupport: im.SriovNetSupport, BootMode: im.BootMode, ImdsSupport: im.ImdsSupport,
		TpmSupport: im.TpmSupport, DeprecationTime: im.DeprecationTime, PlatformDetails: "Linux/UNIX",
		UsageOperation: "RunInstances", SourceImageID: im.SourceImageID, SourceImageRegion: im.SourceRegion,
	}
	if im.EnaSupport {
		t := true
		x.EnaSupport = &t
	}
	if im.State == "pending" {
		x.StateReason = &xmlStateReason{Code: "pending", Message: "pending"}
	}
	return x
}

func (s *Server) imageAttr(im *image, name string) ([]string, bool) {
	if v, ok := tagAttr(im.Tags, name); ok {
		return v, true
	}
	one := func(v string) ([]string, bool) { return []string{v}, true }
	switch name {
	case "name":
		return one(im.Name)
	case "image-id":
		return one(im.ID)
	case "state":
		return one(im.State)
	case "architecture":
		return one(im.Architecture)
	case "owner-id":
		return one(s.cfg.accountID)
	case "is-public":
		return one(boolStr(im.public()))
	case "description":
		return one(im.Description)
	case "image-type":
		return one("machine")
	case "root-device-type":
		return one("ebs")
	case "root-device-name":
		return one(im.RootDeviceName)
	case "virtualization-type":
		return one(im.VirtualizationType)
	case "ena-support":
		return one(boolStr(im.EnaSupport))
	case "sriov-net-support":
		return one(im.SriovNetSupport)
	case "boot-mode":
		return one(im.BootMode)
	case "imds-support":
		return one(im.ImdsSupport)
	case "tpm-support":
		return one(im.TpmSupport)
	case "hypervisor":
		return one("xen")
	case "creation-date":
		return one(ec2Time(im.CreationDate))
	case "source-image-id":
		return one(im.SourceImageID)
	case "source-image-region":
		return one(im.SourceRegion)
	case "block-device-mapping.snapshot-id":
		return im.snapshotIDs(), true
	case "block-device-mapping.device-name":
		var v []string
		for _, bd := range im.BlockDevices {
			v = append(v, bd.DeviceName)
		}
		return v, true
	case "block-device-mapping.volume-size":
		var v []string
		for _, bd := range im.BlockDevices {
			v = append(v, strconv.FormatInt(bd.VolumeSize, 10))
		}
		return v, true
	case "block-device-mapping.volume-type":
		var v []string
		for _, bd := range im.BlockDevices {
			v = append(v, bd.VolumeType)
		}
		return v, true
	}
	return nil, false
}

func (s *Server) describeImages(c *call) *apiError {
	f := c.form
	ids := f.list("ImageId")
	for _, id := range ids {
		if err := checkAMIID(id); err != nil {
			return err
		}
	}
	owners := f.list("Owner")
	filters := f.filters("Filter")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	var missing []string
	for _, id := range ids {
		if _, ok := r.Images[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return amiNotFound(missing...)
	}
	type resp struct {
		ec2Meta
		Images []xmlImage `xml:"imagesSet>item"`
	}
	out := &resp{}
	if !s.ownerMatches(owners) {
		return ec2OK(c, out)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, id := range sortedKeys(r.Images) {
		im := r.Images[id]
		if len(ids) > 0 && !want[id] {
			continue
		}
		ok, err := matchFilters(filters, func(name string) ([]string, bool) { return s.imageAttr(im, name) })
		if err != nil {
			return err
		}
		if ok {
			out.Images = append(out.Images, s.xmlImage(im))
		}
	}
	return ec2OK(c, out)
}

// imageUsing returns an image of the region whose block devices use the snapshot.
func (r *region) imageUsing(snapshotID string) *image {
	for _, id := range sortedKeys(r.Images) {
		for _, sid := range r.Images[id].snapshotIDs() {
			if sid == snapshotID {
				return r.Images[id]
			}
		}
	}
	return nil
}

func (s *Server) deregisterImage(c *call) *apiError {
	id := c.form.get("ImageId")
	deleteSnaps, _ := c.form.boolean("DeleteAssociatedSnapshots")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	im, aerr := r.image(id)
	if aerr != nil {
		return aerr
	}
	delete(r.Images, id)
	type result struct {
		SnapshotID string `xml:"snapshotId"`
		ReturnCode string `xml:"returnCode"`
	}
	type resp struct {
		ec2Meta
		Return  bool     `xml:"return"`
		Results []result `xml:"deleteSnapshotResultSet>item"`
	}
	out := &resp{Return: true}
	if deleteSnaps {
		for _, sid := range im.snapshotIDs() {
			sn, ok := r.Snapshots[sid]
			switch {
			case !ok:
				out.Results = append(out.Results, result{sid, "client-error"})
			case r.imageUsing(sid) != nil:
				out.Results = append(out.Results, result{sid, "skipped"})
			default:
				sn.blocks.remove()
				delete(r.Snapshots, sid)
				out.Results = append(out.Results, result{sid, "success"})
			}
		}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, out)
}

// kmsKeyRegion returns the region of a KMS key or alias ARN, or "" for a key ID or alias name.
func kmsKeyRegion(key string) string {
	parts := strings.Split(key, ":")
	if len(parts) >= 6 && parts[0] == "arn" && parts[2] == "kms" {
		return parts[3]
	}
	return ""
}

func (s *Server) copyImage(c *call) *apiError {
	f := c.form
	srcRegion := f.get("SourceRegion")
	if srcRegion == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter SourceRegion")
	}
	if !validRegion(srcRegion) {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Invalid source region: %s", srcRegion))
	}
	srcID := f.get("SourceImageId")
	if srcID == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter SourceImageId")
	}
	name := f.get("Name")
	if err := checkAMIName(name); err != nil {
		return err
	}
	encrypted, _ := f.boolean("Encrypted")
	kms := f.get("KmsKeyId")
	if kms != "" && !encrypted {
		return ec2Err("InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
	}
	if kr := kmsKeyRegion(kms); kr != "" && kr != c.region {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("The KMS key %s is in %s; CopyImage to %s needs a key of the destination Region.", kms, kr, c.region))
	}
	copyTags, _ := f.boolean("CopyImageTags")
	specs, aerr := f.tagSpecs("image", "snapshot")
	if aerr != nil {
		return aerr
	}
	token := f.get("ClientToken")

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	dst := s.st.region(c.region)
	params := ""
	if token != "" {
		p := map[string][]string{}
		for k, v := range f {
			if k != "ClientToken" {
				p[k] = v
			}
		}
		b, _ := json.Marshal(p)
		params = string(b)
		if t, ok := dst.Tokens["CopyImage/"+token]; ok {
			if t.Params != params {
				return ec2Err("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted or with different parameters.")
			}
			type resp struct {
				ec2Meta
				ImageID string `xml:"imageId"`
			}
			return ec2OK(c, &resp{ImageID: t.Resource})
		}
	}
	if err := checkAMIID(srcID); err != nil {
		return err
	}
	src := s.st.regions[srcRegion]
	if src == nil || src.Images[srcID] == nil {
		return amiNotFound(srcID)
	}
	sim := src.Images[srcID]
	if sim.State != "available" {
		return ec2Err("IncorrectState", fmt.Sprintf("Image %s is not in a valid state for copying (%s).", srcID, sim.State))
	}
	if other := dst.imageByName(name); other != nil {
		return ec2Err("InvalidAMIName.Duplicate", fmt.Sprintf("AMI name %s is already in use by AMI %s", name, other.ID))
	}

	now := s.now()
	im := &image{
		ID: newID("ami-"), Name: name, Description: f.get("Description"), Architecture: sim.Architecture,
		BootMode: sim.BootMode, EnaSupport: sim.EnaSupport, SriovNetSupport: sim.SriovNetSupport,
		ImdsSupport: sim.ImdsSupport, TpmSupport: sim.TpmSupport, UefiData: sim.UefiData,
		RootDeviceName: sim.RootDeviceName, VirtualizationType: sim.VirtualizationType,
		CreationDate: now, AvailableAt: now.Add(s.cfg.copyDelay), State: "available",
		SourceImageID: srcID, SourceRegion: srcRegion,
	}
	if s.cfg.copyDelay > 0 {
		im.State = "pending"
	}
	if copyTags && len(sim.Tags) > 0 {
		im.Tags = maps.Clone(sim.Tags)
	}
	if t := specs["image"]; len(t) > 0 {
		if im.Tags == nil {
			im.Tags = map[string]string{}
		}
		maps.Copy(im.Tags, t)
	}
	var created []*snapshot
	fail := func(err error) *apiError {
		for _, sn := range created {
			sn.blocks.remove()
		}
		return internalError("ec2", err)
	}
	for _, bd := range sim.BlockDevices {
		nbd := bd
		if bd.SnapshotID != "" {
			ssn, ok := src.Snapshots[bd.SnapshotID]
			if !ok {
				return fail(fmt.Errorf("snapshot %s of %s is gone", bd.SnapshotID, srcID))
			}
			sn := &snapshot{
				ID: newID("snap-"), State: "completed", VolumeSize: ssn.VolumeSize, StartTime: now,
				Origin: "copy", Sealed: true, CompleteAt: im.AvailableAt, SourceSnapshot: ssn.ID,
				Encrypted: ssn.Encrypted || encrypted, Tags: maps.Clone(specs["snapshot"]),
				Description: fmt.Sprintf("Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s. Task created on %d.", im.ID, srcID, ssn.ID, now.UnixMilli()),
			}
			if s.cfg.copyDelay > 0 {
				sn.State = "pending"
			}
			if sn.Encrypted {
				sn.KmsKeyID = kms
				if sn.KmsKeyID == "" {
					if srcRegion == c.region && ssn.Encrypted {
						sn.KmsKeyID = ssn.KmsKeyID
					} else {
						sn.KmsKeyID = s.defaultKMSKey(c.region)
					}
				}
			}
			bs, err := openBlockSet(s.st.snapshotPath(c.region, sn.ID))
			if err != nil {
				return fail(err)
			}
			sn.blocks = bs
			created = append(created, sn)
			if err := ssn.blocks.copyTo(bs, true); err != nil {
				return fail(err)
			}
			bs.seal()
			nbd.SnapshotID = sn.ID
			if sn.Encrypted {
				t := true
				nbd.Encrypted = &t
				nbd.KmsKeyID = sn.KmsKeyID
			}
		}
		im.BlockDevices = append(im.BlockDevices, nbd)
	}
	for _, sn := range created {
		dst.Snapshots[sn.ID] = sn
	}
	dst.Images[im.ID] = im
	if token != "" {
		dst.Tokens["CopyImage/"+token] = clientToken{Op: "CopyImage", Params: params, Resource: im.ID}
	}
	if err := s.st.save(dst); err != nil {
		return internalError("ec2", err)
	}
	type resp struct {
		ec2Meta
		ImageID string `xml:"imageId"`
	}
	return ec2OK(c, &resp{ImageID: im.ID})
}

func checkLaunchPermission(p launchPermission) *apiError {
	switch {
	case p.UserID != "" && !accountIDRE.MatchString(p.UserID):
		return ec2Err("InvalidAMIAttributeItemValue", fmt.Sprintf("Invalid attribute item value \"%s\" for userId item type.", p.UserID))
	case p.Group != "" && p.Group != "all":
		return ec2Err("InvalidAMIAttributeItemValue", fmt.Sprintf("Invalid attribute item value \"%s\" for group item type.", p.Group))
	case p.OrganizationArn != "" && !strings.HasPrefix(p.OrganizationArn, "arn:aws:organizations::"):
		return ec2Err("InvalidParameterValue", fmt.Sprintf("The organization ARN %s is not valid.", p.OrganizationArn))
	case p.OrganizationalUnitArn != "" && !strings.HasPrefix(p.OrganizationalUnitArn, "arn:aws:organizations::"):
		return ec2Err("InvalidParameterValue", fmt.Sprintf("The organizational unit ARN %s is not valid.", p.OrganizationalUnitArn))
	case p == launchPermission{}:
		return ec2Err("InvalidParameterValue", "A launch permission needs a UserId, a Group, an OrganizationArn or an OrganizationalUnitArn.")
	}
	return nil
}

func (f form) launchPermissions(prefix string) []launchPermission {
	var out []launchPermission
	for _, i := range f.indexes(prefix) {
		p := fmt.Sprintf("%s.%d.", prefix, i)
		out = append(out, launchPermission{UserID: f.get(p + "UserId"), Group: f.get(p + "Group"),
			OrganizationArn: f.get(p + "OrganizationArn"), OrganizationalUnitArn: f.get(p + "OrganizationalUnitArn")})
	}
	return out
}

func (s *Server) modifyImageAttribute(c *call) *apiError {
	f := c.form
	add := f.launchPermissions("LaunchPermission.Add")
	remove := f.launchPermissions("LaunchPermission.Remove")
	attr := f.get("Attribute")
	var flat []launchPermission
	for _, u := range f.list("UserId") {
		flat = append(flat, launchPermission{UserID: u})
	}
	for _, g := range f.list("UserGroup") {
		flat = append(flat, launchPermission{Group: g})
	}
	for _, o := range f.list("OrganizationArn") {
		flat = append(flat, launchPermission{OrganizationArn: o})
	}
	for _, o := range f.list("OrganizationalUnitArn") {
		flat = append(flat, launchPermission{OrganizationalUnitArn: o})
	}
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
	for _, p := range append(append([]launchPermission{}, add...), remove...) {
		if err := checkLaunchPermission(p); err != nil {
			return err
		}
	}
	desc, hasDesc := f.get("Description.Value"), f.has("Description.Value")
	if attr == "description" && f.has("Value") {
		desc, hasDesc = f.get("Value"), true
	}
	imds, hasImds := f.get("ImdsSupport.Value"), f.has("ImdsSupport.Value")
	if hasImds && imds != "v2.0" {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter imdsSupport is invalid.", imds))
	}
	if len(add) == 0 && len(remove) == 0 && !hasDesc && !hasImds {
		return ec2Err("MissingParameter", "The request must contain a launch permission, description or imdsSupport modification")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	im, aerr := r.image(f.get("ImageId"))
	if aerr != nil {
		return aerr
	}
	for _, p := range remove {
		kept := im.LaunchPermissions[:0]
		for _, q := range im.LaunchPermissions {
			if q != p {
				kept = append(kept, q)
			}
		}
		im.LaunchPermissions = kept
	}
	for _, p := range add {
		dup := false
		for _, q := range im.LaunchPermissions {
			dup = dup || q == p
		}
		if !dup {
			im.LaunchPermissions = append(im.LaunchPermissions, p)
		}
	}
	if hasDesc {
		im.Description = desc
	}
	if hasImds {
		im.ImdsSupport = imds
	}
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}

type xmlValue struct {
	Value string `xml:"value"`
}

func optValue(v string) *xmlValue {
	if v == "" {
		return nil
	}
	return &xmlValue{v}
}

func (s *Server) describeImageAttribute(c *call) *apiError {
	type xmlPerm struct {
		UserID                string `xml:"userId,omitempty"`
		Group                 string `xml:"group,omitempty"`
		OrganizationArn       string `xml:"organizationArn,omitempty"`
		OrganizationalUnitArn string `xml:"organizationalUnitArn,omitempty"`
	}
	type resp struct {
		ec2Meta
		ImageID                  string    `xml:"imageId"`
		LaunchPermission         []xmlPerm `xml:"launchPermission>item"`
		Description              *xmlValue `xml:"description,omitempty"`
		BootMode                 *xmlValue `xml:"bootMode,omitempty"`
		ImdsSupport              *xmlValue `xml:"imdsSupport,omitempty"`
		TpmSupport               *xmlValue `xml:"tpmSupport,omitempty"`
		SriovNetSupport          *xmlValue `xml:"sriovNetSupport,omitempty"`
		UefiData                 *xmlValue `xml:"uefiData,omitempty"`
		DeregistrationProtection *xmlValue `xml:"deregistrationProtection,omitempty"`
		BlockDeviceMapping       []xmlBDM  `xml:"blockDeviceMapping>item"`
	}
	attr := c.form.get("Attribute")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	im, aerr := r.image(c.form.get("ImageId"))
	if aerr != nil {
		return aerr
	}
	out := &resp{ImageID: im.ID}
	switch attr {
	case "launchPermission":
		for _, p := range im.LaunchPermissions {
			out.LaunchPermission = append(out.LaunchPermission, xmlPerm(p))
		}
	case "description":
		out.Description = &xmlValue{im.Description}
	case "bootMode":
		out.BootMode = optValue(im.BootMode)
	case "imdsSupport":
		out.ImdsSupport = optValue(im.ImdsSupport)
	case "tpmSupport":
		out.TpmSupport = optValue(im.TpmSupport)
	case "sriovNetSupport":
		out.SriovNetSupport = optValue(im.SriovNetSupport)
	case "uefiData":
		out.UefiData = optValue(im.UefiData)
	case "deregistrationProtection":
		out.DeregistrationProtection = &xmlValue{"disabled"}
	case "blockDeviceMapping":
		out.BlockDeviceMapping = xmlBDMs(im.BlockDevices)
	case "kernel", "ramdisk", "productCodes", "lastLaunchedTime":
	case "":
		return ec2Err("MissingParameter", "The request must contain the parameter Attribute")
	default:
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter attribute is invalid. Unknown attribute.", attr))
	}
	return ec2OK(c, out)
}

func (s *Server) enableImageDeprecation(c *call) *apiError {
	at := c.form.get("DeprecateAt")
	if at == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter DeprecateAt")
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter DeprecateAt is invalid.", at))
	}
	t = t.UTC().Round(time.Minute) // EC2 rounds to the nearest minute
	now := s.now()
	if t.Before(now) {
		return ec2Err("InvalidParameterValue", "The deprecation time must be in the future.")
	}
	if t.After(now.AddDate(10, 0, 0)) {
		return ec2Err("InvalidParameterValue", "The deprecation time can be at most 10 years from now.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	im, aerr := r.image(c.form.get("ImageId"))
	if aerr != nil {
		return aerr
	}
	im.DeprecationTime = ec2Time(t)
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}

func (s *Server) disableImageDeprecation(c *call) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	im, aerr := r.image(c.form.get("ImageId"))
	if aerr != nil {
		return aerr
	}
	im.DeprecationTime = ""
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}
