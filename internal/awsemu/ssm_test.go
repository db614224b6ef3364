package awsemu

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

func TestParameters(t *testing.T) {
	s := startServer(t)
	cl := clientsFor(s, "ap-south-1", withAttempts(1))
	ctx := context.Background()
	put := func(name, value string, overwrite bool, typ ssmtypes.ParameterType) error {
		_, err := cl.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(value), Type: typ, Overwrite: aws.Bool(overwrite)})
		return err
	}
	for _, n := range []string{"/gpuforge/a", "/gpuforge/nested/b", "/other"} {
		if err := put(n, "v1", false, ssmtypes.ParameterTypeString); err != nil {
			t.Fatal(err)
		}
	}
	if err := put("/gpuforge/a", "v2", true, ssmtypes.ParameterTypeString); err != nil {
		t.Fatal(err)
	}
	if err := put("/gpuforge/a", "v3", true, ssmtypes.ParameterTypeSecureString); apiCode(err) != "HierarchyTypeMismatchException" {
		t.Errorf("type change: %v, want HierarchyTypeMismatchException", err)
	}
	if err := put("no/leading/slash", "v", false, ssmtypes.ParameterTypeString); apiCode(err) != "ValidationException" {
		t.Errorf("bad name: %v, want ValidationException", err)
	}
	old, err := cl.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/gpuforge/a:1")})
	if err != nil || aws.ToString(old.Parameter.Value) != "v1" {
		t.Errorf("version 1: %v %+v", err, old)
	}
	shallow, err := cl.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/gpuforge")})
	if err != nil || len(shallow.Parameters) != 1 || aws.ToString(shallow.Parameters[0].Value) != "v2" {
		t.Errorf("GetParametersByPath: %v %+v", err, shallow)
	}
	deep, err := cl.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/gpuforge"), Recursive: aws.Bool(true)})
	if err != nil || len(deep.Parameters) != 2 {
		t.Errorf("GetParametersByPath recursive: %v %+v", err, deep)
	}
	if _, err := cl.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String("/other")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String("/other")}); apiCode(err) != "ParameterNotFound" {
		t.Errorf("second delete: %v, want ParameterNotFound", err)
	}
	if inv := s.Inventory(); len(inv.Parameters) != 2 || inv.Parameters[0].Region != "ap-south-1" {
		t.Errorf("Inventory parameters = %+v", inv.Parameters)
	}
}
