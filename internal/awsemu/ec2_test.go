package awsemu

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// waitImage polls DescribeImages until the image reaches state.
func waitImage(t *testing.T, cl *ec2.Client, id, state string) ec2types.Image {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := cl.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if string(out.Images[0].State) == state {
			return out.Images[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("image %s is %s, want %s", id, out.Images[0].State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestImageLifecycle(t *testing.T) {
	var clock testClock
	s := startServer(t, WithCopyDelay(5*time.Minute), withClock(clock.now))
	east := clientsFor(s, "us-east-1", withAttempts(1))
	west := clientsFor(s, "us-west-2", withAttempts(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	snap := uploadSnapshot(t, east, 2, map[int32][]byte{0: randomBlock(rng), 100: randomBlock(rng)})

	ami := registerTestImage(t, east, "gpu-node-2026-12-02", snap)
	if _, err := east.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("gpu-node-2026-12-02"),
		RootDeviceName: aws.String("/dev/xvda"), VirtualizationType: aws.String("hvm"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String(snap)}}},
	}); apiCode(err) != "InvalidAMIName.Duplicate" {
		t.Errorf("duplicate name: %v, want InvalidAMIName.Duplicate", err)
	}
	if _, err := east.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("small"),
		RootDeviceName: aws.String("/dev/xvda"), VirtualizationType: aws.String("hvm"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String(snap), VolumeSize: aws.Int32(1)}}},
	}); apiCode(err) != "InvalidBlockDeviceMapping" {
		t.Errorf("volume smaller than the snapshot: %v, want InvalidBlockDeviceMapping", err)
	}
	waitImage(t, east.ec2, ami, "pending")
	clock.advance(5 * time.Minute)
	im := waitImage(t, east.ec2, ami, "available")
	if im.BootMode != "uefi" || !aws.ToBool(im.EnaSupport) || im.ImdsSupport != "v2.0" || im.TpmSupport != "v2.0" ||
		aws.ToString(im.SriovNetSupport) != "simple" || im.Architecture != "x86_64" || aws.ToString(im.RootDeviceName) != "/dev/xvda" {
		t.Errorf("image attributes = %+v", im)
	}
	if len(im.BlockDeviceMappings) != 1 || aws.ToString(im.BlockDeviceMappings[0].Ebs.SnapshotId) != snap ||
		im.BlockDeviceMappings[0].Ebs.VolumeType != "gp3" || aws.ToInt32(im.BlockDeviceMappings[0].Ebs.Throughput) != 125 {
		t.Errorf("block device mappings = %+v", im.BlockDeviceMappings)
	}

	// DescribeImages by tag and by name, owners self.
	byTag, err := east.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:gpuforge:build"), Values: []string{"b1"}}, {Name: aws.String("name"), Values: []string{"gpu-node-*"}}}})
	if err != nil || len(byTag.Images) != 1 {
		t.Fatalf("DescribeImages by tag and name: %v %d", err, len(byTag.Images))
	}
	if _, err := east.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{"ami-0123456789abcdef0"}}); apiCode(err) != "InvalidAMIID.NotFound" {
		t.Errorf("unknown image: %v, want InvalidAMIID.NotFound", err)
	}

	// CopyImage is called on the destination Region's endpoint.
	kms := "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	if _, err := west.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"),
		Name: aws.String("copy"), Encrypted: aws.Bool(true), KmsKeyId: aws.String("arn:aws:kms:us-east-1:123456789012:key/x")}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("KMS key of the source Region: %v, want InvalidParameterValue", err)
	}
	cp, err := west.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"),
		Name: aws.String("gpu-node-2026-12-02"), Encrypted: aws.Bool(true), KmsKeyId: aws.String(kms), CopyImageTags: aws.Bool(true),
		ClientToken: aws.String("copy-1")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := west.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"),
		Name: aws.String("gpu-node-2026-12-02"), Encrypted: aws.Bool(true), KmsKeyId: aws.String(kms), CopyImageTags: aws.Bool(true),
		ClientToken: aws.String("copy-1")})
	if err != nil || aws.ToString(again.ImageId) != aws.ToString(cp.ImageId) {
		t.Errorf("CopyImage with the same ClientToken: %v, %s != %s", err, aws.ToString(again.ImageId), aws.ToString(cp.ImageId))
	}
	copyID := aws.ToString(cp.ImageId)
	pending, err := west.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{copyID}})
	if err != nil || pending.Images[0].State != "pending" {
		t.Errorf("copy right after CopyImage: %v %v, want pending", err, pending.Images)
	}
	clock.advance(5 * time.Minute)
	cim := waitImage(t, west.ec2, copyID, "available")
	copySnap := aws.ToString(cim.BlockDeviceMappings[0].Ebs.SnapshotId)
	if copySnap == snap || !aws.ToBool(cim.BlockDeviceMappings[0].Ebs.Encrypted) || aws.ToString(cim.BlockDeviceMappings[0].Ebs.KmsKeyId) != kms {
		t.Errorf("copied block device = %+v", cim.BlockDeviceMappings[0].Ebs)
	}
	if aws.ToString(cim.SourceImageId) != ami || aws.ToString(cim.SourceImageRegion) != "us-east-1" || cim.BootMode != "uefi" {
		t.Errorf("copy = %+v", cim)
	}
	ws, err := west.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{copySnap}})
	if err != nil || ws.Snapshots[0].State != "completed" || !aws.ToBool(ws.Snapshots[0].Encrypted) {
		t.Errorf("copied snapshot: %v %+v", err, ws.Snapshots)
	}

	// Share the image and deprecate it.
	_, err = west.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(copyID),
		LaunchPermission: &ec2types.LaunchPermissionModifications{Add: []ec2types.LaunchPermission{
			{UserId: aws.String("210987654321")}, {Group: ec2types.PermissionGroupAll},
			{OrganizationArn: aws.String("arn:aws:organizations::123456789012:organization/o-abc")},
			{OrganizationalUnitArn: aws.String("arn:aws:organizations::123456789012:ou/o-abc/ou-1")},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := west.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(copyID),
		LaunchPermission: &ec2types.LaunchPermissionModifications{Add: []ec2types.LaunchPermission{{UserId: aws.String("12")}}}}); apiCode(err) != "InvalidAMIAttributeItemValue" {
		t.Errorf("malformed account: %v, want InvalidAMIAttributeItemValue", err)
	}
	attr, err := west.ec2.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(copyID), Attribute: ec2types.ImageAttributeNameLaunchPermission})
	if err != nil || len(attr.LaunchPermissions) != 4 {
		t.Fatalf("DescribeImageAttribute: %v %+v", err, attr)
	}
	deprecate := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Minute)
	if _, err := west.ec2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(copyID), DeprecateAt: aws.Time(deprecate)}); err != nil {
		t.Fatal(err)
	}

	// Publish the copy's ID in SSM.
	if _, err := west.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/gpuforge/gpu-node/latest"), Value: aws.String(copyID),
		Type: ssmtypes.ParameterTypeString, DataType: aws.String("aws:ec2:image")}); err != nil {
		t.Fatal(err)
	}
	if _, err := west.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/gpuforge/gpu-node/latest"), Value: aws.String(copyID),
		Type: ssmtypes.ParameterTypeString}); apiCode(err) != "ParameterAlreadyExists" {
		t.Errorf("PutParameter without Overwrite: %v, want ParameterAlreadyExists", err)
	}
	p, err := west.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/gpuforge/gpu-node/latest")})
	if err != nil || aws.ToString(p.Parameter.Value) != copyID || aws.ToString(p.Parameter.DataType) != "aws:ec2:image" || p.Parameter.Version != 1 {
		t.Fatalf("GetParameter: %v %+v", err, p)
	}
	// An aws:ec2:image value that is not an AMI of the Region is accepted and never stored.
	if _, err := west.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/gpuforge/gpu-node/latest"), Value: aws.String(ami),
		Type: ssmtypes.ParameterTypeString, DataType: aws.String("aws:ec2:image"), Overwrite: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/gpuforge/gpu-node/latest")}); apiCode(err) != "ParameterNotFound" {
		t.Errorf("parameter of another Region: %v, want ParameterNotFound", err)
	}

	inv := s.Inventory()
	if len(inv.Images) != 2 || len(inv.Snapshots) != 2 || len(inv.Parameters) != 1 {
		t.Fatalf("Inventory = %+v", inv)
	}
	var west2 Image
	for _, i := range inv.Images {
		if i.Region == "us-west-2" {
			west2 = i
		}
	}
	if west2.ID != copyID || west2.State != "available" || west2.Tags["gpuforge:build"] != "b1" ||
		!slices.Equal(west2.SnapshotIDs, []string{copySnap}) || west2.BootMode != "uefi" || !west2.EnaSupport ||
		west2.ImdsSupport != "v2.0" || west2.TpmSupport != "v2.0" || west2.Architecture != "x86_64" ||
		!slices.Contains(west2.LaunchPermissions, "all") || !slices.Contains(west2.LaunchPermissions, "210987654321") ||
		west2.DeprecationTime != deprecate.Format("2006-01-02T15:04:05.000Z") {
		t.Errorf("Inventory image = %+v", west2)
	}
	if param := inv.Parameters[0]; param.Region != "us-west-2" || param.Value != copyID {
		t.Errorf("Inventory parameter = %+v", param)
	}
	if got := s.Stats().Rejected["PutParameter"]; got != 2 {
		t.Errorf("Rejected[PutParameter] = %d, want 2 (one exists, one dropped)", got)
	}
}

func TestDeleteSnapshotInUse(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "eu-west-1", withAttempts(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 10))
	snap := uploadSnapshot(t, cl, 1, map[int32][]byte{0: randomBlock(rng)})
	ami := registerTestImage(t, cl, "in-use", snap)

	_, err := cl.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
	if apiCode(err) != "InvalidSnapshot.InUse" || !strings.Contains(err.Error(), ami) {
		t.Fatalf("DeleteSnapshot of a registered image's snapshot: %v, want InvalidSnapshot.InUse naming %s", err, ami)
	}
	if _, err := cl.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ami)}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ami)}); apiCode(err) != "InvalidAMIID.NotFound" {
		t.Errorf("second DeregisterImage: %v, want InvalidAMIID.NotFound", err)
	}
	if _, err := cl.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
	if apiCode(err) != "InvalidSnapshot.NotFound" {
		t.Errorf("deleted snapshot: %v, want InvalidSnapshot.NotFound", err)
	}
	if inv := s.Inventory(); len(inv.Snapshots)+len(inv.Images) != 0 {
		t.Errorf("leftovers: %+v", inv)
	}
}

func TestTagsAndSnapshotSharing(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "us-east-2", withAttempts(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	snap := uploadSnapshot(t, cl, 1, map[int32][]byte{3: randomBlock(rng)})

	if _, err := cl.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap},
		Tags: []ec2types.Tag{{Key: aws.String("run"), Value: aws.String("r7")}, {Key: aws.String("keep"), Value: aws.String("no")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap},
		Tags: []ec2types.Tag{{Key: aws.String("aws:reserved"), Value: aws.String("x")}}}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("aws: tag: %v, want InvalidParameterValue", err)
	}
	if _, err := cl.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"snap-0123456789abcdef0"},
		Tags: []ec2types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}); apiCode(err) != "InvalidSnapshot.NotFound" {
		t.Errorf("tag a missing snapshot: %v, want InvalidSnapshot.NotFound", err)
	}
	if _, err := cl.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{snap}, Tags: []ec2types.Tag{{Key: aws.String("keep")}}}); err != nil {
		t.Fatal(err)
	}
	tags, err := cl.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{{Name: aws.String("resource-id"), Values: []string{snap}}}})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].Key) != "run" || tags.Tags[0].ResourceType != "snapshot" {
		t.Fatalf("DescribeTags: %v %+v", err, tags)
	}
	d, err := cl.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:run"), Values: []string{"r*"}}}})
	if err != nil || len(d.Snapshots) != 1 {
		t.Fatalf("DescribeSnapshots by tag: %v %+v", err, d)
	}
	if _, err := cl.ec2.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: aws.String(snap),
		Attribute:              ec2types.SnapshotAttributeNameCreateVolumePermission,
		CreateVolumePermission: &ec2types.CreateVolumePermissionModifications{Add: []ec2types.CreateVolumePermission{{UserId: aws.String("210987654321")}}}}); err != nil {
		t.Fatal(err)
	}
	a, err := cl.ec2.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: aws.String(snap), Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
	if err != nil || len(a.CreateVolumePermissions) != 1 || aws.ToString(a.CreateVolumePermissions[0].UserId) != "210987654321" {
		t.Fatalf("DescribeSnapshotAttribute: %v %+v", err, a)
	}
	r, err := cl.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{RegionNames: []string{"us-east-2", "eu-west-1"}})
	if err != nil || len(r.Regions) != 2 {
		t.Fatalf("DescribeRegions: %v %+v", err, r)
	}
	_, err = cl.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap), DryRun: aws.Bool(true)})
	if apiCode(err) != "DryRunOperation" || len(s.Inventory().Snapshots) != 1 {
		t.Errorf("DryRun: %v, want DryRunOperation and the snapshot kept", err)
	}
}
