package ami

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// GCItem is one resource GC found (and, unless it was a dry run, removed).
type GCItem struct {
	Region string
	// Kind is "image", "snapshot" or "parameter".
	Kind string
	// ID is the image or snapshot id, or the parameter's name.
	ID string
	// BuildID is the gpuforge:build-id the resource carries ("" for a snapshot or parameter found through
	// an image).
	BuildID string
}

func (i GCItem) String() string {
	s := fmt.Sprintf("%s %s %s", i.Region, i.Kind, i.ID)
	if i.BuildID != "" {
		s += " (build " + i.BuildID + ")"
	}
	return s
}

// GC finds, in each of regions, the account's resources tagged gpuforge:build-id whose build is not in keep —
// leftovers of runs that failed and could not clean up, or were killed — and deletes them: images first,
// then their snapshots and the other tagged snapshots, then the SSM parameters (of data type
// aws:ec2:image) whose value is a deleted image. With dryRun it only lists them. keep must hold every build
// still running: GC removes a running build's pending snapshot like any other. log (nil: none) gets a line
// per resource. It returns what it found, and every failure joined.
func GC(ctx context.Context, cfg aws.Config, regions []string, keep map[string]bool, dryRun bool, log io.Writer) ([]GCItem, error) {
	return gc(ctx, &regionClients{cfg: cfg}, regions, keep, dryRun, log, defaultRetry)
}

func gc(ctx context.Context, rc *regionClients, regions []string, keep map[string]bool, dryRun bool, log io.Writer, p retryPolicy) ([]GCItem, error) {
	if log == nil {
		log = io.Discard
	}
	if len(regions) == 0 {
		regions = []string{rc.cfg.Region}
	}
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	var items []GCItem
	var errs []error
	for _, region := range regions {
		c := rc.get(region)
		found, err := gcRegion(ctx, c, keep, dryRun, p, func(it GCItem) {
			items = append(items, it)
			fmt.Fprintf(log, "gc: %s %s\n", verb, it)
		})
		if err != nil {
			errs = append(errs, err)
		}
		if found == 0 {
			fmt.Fprintf(log, "gc: %s: nothing to remove\n", region)
		}
	}
	return items, errors.Join(errs...)
}

// gcRegion removes one region's leftovers, reporting each (after its removal, or at once on a dry run).
func gcRegion(ctx context.Context, c *clients, keep map[string]bool, dryRun bool, p retryPolicy, report func(GCItem)) (int, error) {
	var errs []error
	n := 0
	done := func(it GCItem, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		n++
		report(it)
	}

	images, err := taggedImages(ctx, c, p, "")
	if err != nil {
		return 0, err
	}
	deleted := map[string]bool{} // images removed (or that would be)
	var snaps []GCItem
	for _, img := range images {
		bid, _ := ec2Tag(img.Tags, BuildIDTag)
		id := aws.ToString(img.ImageId)
		if keep[bid] {
			continue
		}
		deleted[id] = true
		for _, s := range imageSnapshots(img) {
			snaps = append(snaps, GCItem{Region: c.region, Kind: "snapshot", ID: s})
		}
		it := GCItem{Region: c.region, Kind: "image", ID: id, BuildID: bid}
		if dryRun {
			done(it, nil)
			continue
		}
		_, err := call(ctx, p, "DeregisterImage", id, c.region, func(ctx context.Context) (*ec2.DeregisterImageOutput, error) {
			return c.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)})
		})
		if imageGone(err) {
			err = nil
		}
		done(it, err)
	}

	tagged, err := taggedSnapshots(ctx, c, p, "")
	if err != nil {
		errs = append(errs, err)
	}
	kept := map[string]bool{}
	for _, s := range tagged {
		bid, _ := ec2Tag(s.Tags, BuildIDTag)
		id := aws.ToString(s.SnapshotId)
		if keep[bid] {
			kept[id] = true
			continue
		}
		// Replace the untagged entry found through an image, if any, to keep the build id.
		snaps = slices.DeleteFunc(snaps, func(it GCItem) bool { return it.ID == id })
		snaps = append(snaps, GCItem{Region: c.region, Kind: "snapshot", ID: id, BuildID: bid})
	}
	for _, it := range snaps {
		if kept[it.ID] {
			continue // behind a removed image, but tagged by a build to keep
		}
		if dryRun {
			done(it, nil)
			continue
		}
		done(it, deleteSnapshotInUse(ctx, c, it.ID, p))
	}

	params, err := imageParameters(ctx, c, p)
	if err != nil {
		errs = append(errs, err)
	}
	for _, prm := range params {
		name, value := aws.ToString(prm.Name), aws.ToString(prm.Value)
		if !deleted[value] {
			continue
		}
		it := GCItem{Region: c.region, Kind: "parameter", ID: name}
		if dryRun {
			done(it, nil)
			continue
		}
		_, err := call(ctx, p, "DeleteParameter", name, c.region, func(ctx context.Context) (*ssm.DeleteParameterOutput, error) {
			return c.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
		})
		if errorCode(err) == "ParameterNotFound" {
			err = nil
		}
		done(it, err)
	}
	return n, errors.Join(errs...)
}

// imageParameters returns the SSM parameters of data type aws:ec2:image in c's region whose names start
// with "/" (GetParametersByPath "/", recursive: the names gpuforge recipes use), with their values.
func imageParameters(ctx context.Context, c *clients, p retryPolicy) ([]ssmtypes.Parameter, error) {
	in := &ssm.GetParametersByPathInput{Path: aws.String("/"), Recursive: aws.Bool(true)}
	var out []ssmtypes.Parameter
	for {
		page, err := call(ctx, p, "GetParametersByPath", "/", c.region, func(ctx context.Context) (*ssm.GetParametersByPathOutput, error) {
			return c.ssm.GetParametersByPath(ctx, in)
		})
		if err != nil {
			return out, err
		}
		for _, prm := range page.Parameters {
			if aws.ToString(prm.DataType) == "aws:ec2:image" {
				out = append(out, prm)
			}
		}
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}
