package ami

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// BuildIDTag is the tag every resource this package creates carries, valued with the build's id: cleanup
// and GC find resources by it.
const BuildIDTag = "gpuforge:build-id"

// regionClients hands out one *clients per region.
type regionClients struct {
	cfg aws.Config
	mu  sync.Mutex
	m   map[string]*clients
}

func (r *regionClients) get(region string) *clients {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*clients{}
	}
	c, ok := r.m[region]
	if !ok {
		c = newClients(r.cfg, region)
		r.m[region] = c
	}
	return c
}

type regional struct{ Region, ID string }

// pendingCopy is a CopyImage call whose outcome is unknown (no answer came: cancelled or a dropped
// connection): the copy may exist. Repeating the call with its client token returns the copy's id if it
// does (EC2 idempotency), so cleanup can remove it.
type pendingCopy struct {
	Region string
	Input  *ec2.CopyImageInput
}

// paramRecord is an SSM parameter this run wrote, and what it held before, to restore on cleanup.
type paramRecord struct {
	Region, Name string
	Existed      bool
	Prev         ssmtypes.Parameter
}

// ledger records what a run created, as it creates it, so that a failure or a cancellation at any point
// can remove exactly that (and, through the BuildIDTag, what a lost answer hid).
type ledger struct {
	mu        sync.Mutex
	buildID   string
	regions   []string // every region the run may have written to
	images    []regional
	snapshots []regional
	copies    []pendingCopy
	params    []paramRecord
}

func (l *ledger) addImage(region, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id != "" && !slices.Contains(l.images, regional{region, id}) {
		l.images = append(l.images, regional{region, id})
	}
}

func (l *ledger) addSnapshot(region, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id != "" && !slices.Contains(l.snapshots, regional{region, id}) {
		l.snapshots = append(l.snapshots, regional{region, id})
	}
}

func (l *ledger) addCopy(region string, in *ec2.CopyImageInput) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.copies = append(l.copies, pendingCopy{region, in})
}

func (l *ledger) addParam(p paramRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.params = append(l.params, p)
}

// snapshotInUseWait is how long cleanup keeps trying to delete a snapshot EC2 still reports in use by an
// image just deregistered.
var snapshotInUseWait = 2 * time.Minute

// cleanup removes everything the ledger holds: SSM parameters are restored to their previous value or
// deleted, images are deregistered (with the snapshots behind them found first), snapshots are deleted.
// Then each region is swept for images and snapshots tagged with the build's id that a lost answer kept
// out of the ledger. It goes on after a failure and returns them all; log gets a line per removal.
func (l *ledger) cleanup(ctx context.Context, rc *regionClients, p retryPolicy, logf func(string, ...any)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error

	for _, pr := range slices.Backward(l.params) {
		if err := restoreParam(ctx, rc.get(pr.Region), pr, p); err != nil {
			errs = append(errs, err)
		} else if pr.Existed {
			logf("cleanup: restored SSM parameter %s in %s to %s", pr.Name, pr.Region, aws.ToString(pr.Prev.Value))
		} else {
			logf("cleanup: deleted SSM parameter %s in %s", pr.Name, pr.Region)
		}
	}

	// Copies whose CopyImage got no answer: ask again with the same client token to learn their ids.
	for _, pc := range l.copies {
		c := rc.get(pc.Region)
		out, err := call(ctx, p, "CopyImage", "(cleanup) "+aws.ToString(pc.Input.Name)+" to "+pc.Region, c.region, func(ctx context.Context) (*ec2.CopyImageOutput, error) {
			return c.ec2.CopyImage(ctx, pc.Input)
		})
		if err == nil {
			l.addImageLocked(pc.Region, aws.ToString(out.ImageId))
		}
		// A failure means the source is gone and the first call never made a copy, or EC2 refuses: the
		// sweep below still finds a tagged copy.
	}

	// Sweep: tagged resources whose ids the run never saw.
	for _, region := range l.regions {
		c := rc.get(region)
		imgs, err := taggedImages(ctx, c, p, l.buildID)
		if err != nil {
			errs = append(errs, err)
		}
		for _, img := range imgs {
			l.addImageLocked(region, aws.ToString(img.ImageId))
		}
	}

	for _, img := range l.images {
		snaps, err := deregisterImage(ctx, rc.get(img.Region), img.ID, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		logf("cleanup: deregistered %s in %s", img.ID, img.Region)
		for _, s := range snaps {
			l.addSnapshotLocked(img.Region, s)
		}
	}

	for _, region := range l.regions {
		snaps, err := taggedSnapshots(ctx, rc.get(region), p, l.buildID)
		if err != nil {
			errs = append(errs, err)
		}
		for _, s := range snaps {
			l.addSnapshotLocked(region, aws.ToString(s.SnapshotId))
		}
	}
	for _, s := range l.snapshots {
		if err := deleteSnapshotInUse(ctx, rc.get(s.Region), s.ID, p); err != nil {
			errs = append(errs, err)
			continue
		}
		logf("cleanup: deleted %s in %s", s.ID, s.Region)
	}
	return errors.Join(errs...)
}

func (l *ledger) addImageLocked(region, id string) {
	if id != "" && !slices.Contains(l.images, regional{region, id}) {
		l.images = append(l.images, regional{region, id})
	}
}

func (l *ledger) addSnapshotLocked(region, id string) {
	if id != "" && !slices.Contains(l.snapshots, regional{region, id}) {
		l.snapshots = append(l.snapshots, regional{region, id})
	}
}

// deregisterImage deregisters id and returns the snapshots behind it, which stay (deleted next). An image
// already gone counts as deregistered.
func deregisterImage(ctx context.Context, c *clients, id string, p retryPolicy) ([]string, error) {
	var snaps []string
	out, err := call(ctx, p, "DescribeImages", id, c.region, func(ctx context.Context) (*ec2.DescribeImagesOutput, error) {
		return c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	})
	switch {
	case err == nil:
		for _, img := range out.Images {
			snaps = append(snaps, imageSnapshots(img)...)
		}
	case imageGone(err):
		return nil, nil
	default:
		return nil, err
	}
	_, err = call(ctx, p, "DeregisterImage", id, c.region, func(ctx context.Context) (*ec2.DeregisterImageOutput, error) {
		return c.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)})
	})
	if err != nil && !imageGone(err) {
		return snaps, err
	}
	return snaps, nil
}

func imageGone(err error) bool {
	switch errorCode(err) {
	case "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable":
		return true
	}
	return false
}

// imageSnapshots returns the EBS snapshots behind img.
func imageSnapshots(img ec2types.Image) []string {
	var out []string
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil && m.Ebs.SnapshotId != nil {
			out = append(out, *m.Ebs.SnapshotId)
		}
	}
	return out
}

// deleteSnapshotInUse deletes snap, waiting while EC2 still counts it in use by an image just deregistered.
func deleteSnapshotInUse(ctx context.Context, c *clients, snap string, p retryPolicy) error {
	var err error
	deadline := time.Now().Add(snapshotInUseWait)
	for wait := pollFirst; ; wait = min(wait*2, pollMax) {
		err = deleteSnapshot(ctx, c, snap, p)
		if err == nil || errorCode(err) != "InvalidSnapshot.InUse" || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// restoreParam puts back the value a parameter held before the run wrote it, or deletes it if the run
// created it.
func restoreParam(ctx context.Context, c *clients, pr paramRecord, p retryPolicy) error {
	if !pr.Existed {
		_, err := call(ctx, p, "DeleteParameter", pr.Name, c.region, func(ctx context.Context) (*ssm.DeleteParameterOutput, error) {
			return c.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(pr.Name)})
		})
		if errorCode(err) == "ParameterNotFound" {
			return nil
		}
		return err
	}
	_, err := call(ctx, p, "PutParameter", pr.Name+" (restore)", c.region, func(ctx context.Context) (*ssm.PutParameterOutput, error) {
		return c.ssm.PutParameter(ctx, &ssm.PutParameterInput{
			Name:      aws.String(pr.Name),
			Value:     pr.Prev.Value,
			Type:      pr.Prev.Type,
			DataType:  pr.Prev.DataType,
			Overwrite: aws.Bool(true),
		})
	})
	return err
}

// taggedImages lists the account's images in c's region that carry BuildIDTag, with value buildID ("": any).
func taggedImages(ctx context.Context, c *clients, p retryPolicy, buildID string) ([]ec2types.Image, error) {
	in := &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: tagFilter(buildID)}
	var out []ec2types.Image
	for {
		page, err := call(ctx, p, "DescribeImages", "tagged "+tagDesc(buildID), c.region, func(ctx context.Context) (*ec2.DescribeImagesOutput, error) {
			return c.ec2.DescribeImages(ctx, in)
		})
		if err != nil {
			return out, err
		}
		out = append(out, page.Images...)
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

// taggedSnapshots lists the account's snapshots in c's region that carry BuildIDTag, with value buildID
// ("": any).
func taggedSnapshots(ctx context.Context, c *clients, p retryPolicy, buildID string) ([]ec2types.Snapshot, error) {
	in := &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: tagFilter(buildID)}
	var out []ec2types.Snapshot
	for {
		page, err := call(ctx, p, "DescribeSnapshots", "tagged "+tagDesc(buildID), c.region, func(ctx context.Context) (*ec2.DescribeSnapshotsOutput, error) {
			return c.ec2.DescribeSnapshots(ctx, in)
		})
		if err != nil {
			return out, err
		}
		out = append(out, page.Snapshots...)
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

func tagFilter(buildID string) []ec2types.Filter {
	if buildID == "" {
		return []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{BuildIDTag}}}
	}
	return []ec2types.Filter{{Name: aws.String("tag:" + BuildIDTag), Values: []string{buildID}}}
}

func tagDesc(buildID string) string {
	if buildID == "" {
		return BuildIDTag
	}
	return fmt.Sprintf("%s=%s", BuildIDTag, buildID)
}

func ec2Tag(tags []ec2types.Tag, key string) (string, bool) {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value), true
		}
	}
	return "", false
}
