package awsemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// SSM Parameter Store (JSON 1.1): PutParameter, GetParameter, GetParameters,
// GetParametersByPath, DeleteParameter, DeleteParameters.

type ssmHandler func(s *Server, c *call) *apiError

var ssmOps = map[string]ssmHandler{
	"PutParameter":        (*Server).putParameter,
	"GetParameter":        (*Server).getParameter,
	"GetParameters":       (*Server).getParameters,
	"GetParametersByPath": (*Server).getParametersByPath,
	"DeleteParameter":     (*Server).deleteParameter,
	"DeleteParameters":    (*Server).deleteParameters,
}

func (s *Server) routeSSM(c *call) *apiError {
	target := c.r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "AmazonSSM.")
	if !ok || c.r.Method != http.MethodPost {
		return ssmErr("UnknownOperationException", fmt.Sprintf("no SSM operation for target %q", target))
	}
	c.op = op
	return c.readBody()
}

func (s *Server) serveSSM(c *call) *apiError {
	h, ok := ssmOps[c.op]
	if !ok {
		return ssmErr("UnknownOperationException", fmt.Sprintf("awsemu does not implement AmazonSSM.%s", c.op))
	}
	return h(s, c)
}

// ssmNameFromBody finds the Name of an SSM request, for error messages.
func ssmNameFromBody(b []byte) string {
	var in struct{ Name string }
	_ = json.Unmarshal(b, &in)
	return in.Name
}

func parameterARN(regionName, account, name string) string {
	return "arn:aws:ssm:" + regionName + ":" + account + ":parameter/" + strings.TrimPrefix(name, "/")
}

func writeSSM(c *call, v any) *apiError {
	b, err := json.Marshal(v)
	if err != nil {
		return internalError("ssm", err)
	}
	h := c.w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("X-Amzn-Requestid", c.requestID)
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write(b)
	return nil
}

func decodeSSM(c *call, v any) *apiError {
	if err := json.Unmarshal(c.body, v); err != nil {
		return ssmErr("SerializationException", err.Error())
	}
	return nil
}

// checkParameterName applies Parameter Store's naming rules.
func checkParameterName(name string) *apiError {
	switch {
	case name == "":
		return ssmErr("ValidationException", "1 validation error detected: Value at 'name' failed to satisfy constraint: Member must have length greater than or equal to 1")
	case len(name) > 2048:
		return ssmErr("ValidationException", "1 validation error detected: Value at 'name' failed to satisfy constraint: Member must have length less than or equal to 2048")
	case strings.Contains(name, "/") && !strings.HasPrefix(name, "/"):
		return ssmErr("ValidationException", "Parameter name must be a fully qualified name.")
	}
	lower := strings.ToLower(strings.TrimPrefix(name, "/"))
	if strings.HasPrefix(lower, "aws") || strings.HasPrefix(lower, "ssm") {
		return ssmErr("ValidationException", "No access to reserved parameter name: "+name+".")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-/", r)) {
			return ssmErr("ValidationException", "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_.")
		}
	}
	if strings.Count(name, "/") > 15 {
		return ssmErr("HierarchyLevelLimitExceededException", "Parameter name hierarchy has more than 15 levels.")
	}
	return nil
}

type ssmTag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

func (s *Server) putParameter(c *call) *apiError {
	var in struct {
		Name        string
		Value       *string
		Type        string
		Overwrite   *bool
		DataType    string
		Description string
		Tier        string
		Tags        []ssmTag
		KeyID       string `json:"KeyId"`
	}
	if err := decodeSSM(c, &in); err != nil {
		return err
	}
	if err := checkParameterName(in.Name); err != nil {
		return err
	}
	if in.Value == nil {
		return ssmErr("ValidationException", "1 validation error detected: Value at 'value' failed to satisfy constraint: Member must not be null")
	}
	switch in.Type {
	case "", "String", "StringList", "SecureString":
	default:
		return ssmErr("ValidationException", fmt.Sprintf("1 validation error detected: Value '%s' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]", in.Type))
	}
	switch in.DataType {
	case "", "text", "aws:ec2:image", "aws:ssm:integration":
	default:
		return ssmErr("ValidationException", fmt.Sprintf("The following data type is not supported: %s (Data type names are all lowercase.)", in.DataType))
	}
	switch in.Tier {
	case "", "Standard", "Advanced", "Intelligent-Tiering":
	default:
		return ssmErr("ValidationException", fmt.Sprintf("1 validation error detected: Value '%s' at 'tier' failed to satisfy constraint", in.Tier))
	}
	if len(*in.Value) > 4096 && in.Tier != "Advanced" {
		return ssmErr("ValidationException", "Standard tier parameters support a maximum parameter value of 4096 characters.")
	}
	overwrite := in.Overwrite != nil && *in.Overwrite
	if overwrite && len(in.Tags) > 0 {
		return ssmErr("ValidationException", "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.")
	}
	if in.DataType == "aws:ec2:image" && in.Type != "" && in.Type != "String" {
		return ssmErr("ValidationException", "The aws:ec2:image data type is supported only for String parameters.")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	old := r.Parameters[in.Name]
	if old != nil && !overwrite {
		return ssmErr("ParameterAlreadyExists", "The parameter already exists. To overwrite this request value, set the overwrite option in the request to true.")
	}
	if old == nil && in.Type == "" {
		return ssmErr("ValidationException", "A parameter type is required when you create a parameter.")
	}
	dataType := in.DataType
	if dataType == "" {
		dataType = "text"
		if old != nil {
			dataType = old.DataType
		}
	}
	if old != nil {
		if in.Type != "" && in.Type != old.Type {
			return ssmErr("HierarchyTypeMismatchException", "Parameter Store does not support changing a parameter type in a hierarchy. For example, you can't change a parameter from a String type to a SecureString type. You must create a new, unique parameter.")
		}
		if (old.DataType == "aws:ec2:image") != (dataType == "aws:ec2:image") {
			return ssmErr("ValidationException", "You can't change a parameter to or from the aws:ec2:image data type.")
		}
	}
	if dataType == "aws:ec2:image" {
		// Parameter Store validates an aws:ec2:image value asynchronously: the call succeeds, and a
		// value that is not an AMI of this account and Region is never stored.
		im, ok := r.Images[*in.Value]
		if !amiIDRE.MatchString(*in.Value) || !ok || im.State == "failed" {
			s.stats.rejected("PutParameter")
			version := int64(1)
			if old != nil {
				version = old.Version + 1
			}
			return writeSSM(c, map[string]any{"Version": version, "Tier": "Standard"})
		}
	}
	now := s.now()
	p := old
	if p == nil {
		p = &parameter{Name: in.Name, Type: in.Type, Tier: "Standard", Tags: map[string]string{}}
		for _, t := range in.Tags {
			p.Tags[t.Key] = t.Value
		}
		r.Parameters[in.Name] = p
	} else {
		p.History = append(p.History, parameterVersion{Value: p.Value, Version: p.Version, LastModified: p.LastModified})
		if len(p.History) > 99 {
			p.History = p.History[1:]
		}
	}
	if in.Tier == "Advanced" {
		p.Tier = "Advanced"
	}
	p.Value, p.DataType, p.Version, p.LastModified = *in.Value, dataType, p.Version+1, now
	if in.Description != "" {
		p.Description = in.Description
	}
	if err := s.st.save(r); err != nil {
		return internalError("ssm", err)
	}
	return writeSSM(c, map[string]any{"Version": p.Version, "Tier": p.Tier})
}

type ssmParameterOut struct {
	Name             string `json:"Name"`
	Type             string `json:"Type"`
	Value            string `json:"Value"`
	Version          int64  `json:"Version"`
	LastModifiedDate epoch  `json:"LastModifiedDate"`
	ARN              string `json:"ARN"`
	DataType         string `json:"DataType"`
	Selector         string `json:"Selector,omitempty"`
}

// lookupParameter resolves NAME or NAME:VERSION.
func (s *Server) lookupParameter(r *region, regionName, ref string) (*ssmParameterOut, *apiError) {
	name, sel := ref, ""
	if i := strings.LastIndex(ref, ":"); i > 0 {
		name, sel = ref[:i], ref[i:]
	}
	p := r.Parameters[name]
	if p == nil {
		return nil, ssmErr("ParameterNotFound", "")
	}
	out := &ssmParameterOut{Name: p.Name, Type: p.Type, Value: p.Value, Version: p.Version,
		LastModifiedDate: epoch(p.LastModified), ARN: parameterARN(regionName, s.cfg.accountID, p.Name), DataType: p.DataType}
	if sel == "" {
		return out, nil
	}
	v, err := strconv.ParseInt(sel[1:], 10, 64)
	if err != nil {
		return nil, ssmErr("ParameterVersionLabelLimitExceeded", fmt.Sprintf("awsemu supports version selectors only, not the label %s", sel))
	}
	out.Selector = sel
	if v == p.Version {
		return out, nil
	}
	for _, h := range p.History {
		if h.Version == v {
			out.Value, out.Version, out.LastModifiedDate = h.Value, h.Version, epoch(h.LastModified)
			return out, nil
		}
	}
	return nil, ssmErr("ParameterVersionNotFound", fmt.Sprintf("Systems Manager could not find version %d of %s. Verify the version and try again.", v, name))
}

func (s *Server) getParameter(c *call) *apiError {
	var in struct{ Name string }
	if err := decodeSSM(c, &in); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	p, err := s.lookupParameter(s.st.region(c.region), c.region, in.Name)
	if err != nil {
		return err
	}
	return writeSSM(c, map[string]any{"Parameter": p})
}

func (s *Server) getParameters(c *call) *apiError {
	var in struct{ Names []string }
	if err := decodeSSM(c, &in); err != nil {
		return err
	}
	if len(in.Names) == 0 || len(in.Names) > 10 {
		return ssmErr("ValidationException", "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and 10")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	params, invalid := []*ssmParameterOut{}, []string{}
	for _, n := range in.Names {
		p, err := s.lookupParameter(r, c.region, n)
		if err != nil {
			invalid = append(invalid, n)
			continue
		}
		params = append(params, p)
	}
	return writeSSM(c, map[string]any{"Parameters": params, "InvalidParameters": invalid})
}

func (s *Server) getParametersByPath(c *call) *apiError {
	var in struct {
		Path       string
		Recursive  bool
		MaxResults int
		NextToken  string
	}
	if err := decodeSSM(c, &in); err != nil {
		return err
	}
	if !strings.HasPrefix(in.Path, "/") {
		return ssmErr("ValidationException", "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\".")
	}
	max := in.MaxResults
	if max == 0 {
		max = 10
	}
	if max < 1 || max > 10 {
		return ssmErr("ValidationException", "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 10")
	}
	start := 0
	if in.NextToken != "" {
		n, err := strconv.Atoi(in.NextToken)
		if err != nil || n < 0 {
			return ssmErr("ValidationException", "The NextToken is not valid.")
		}
		start = n
	}
	prefix := strings.TrimSuffix(in.Path, "/") + "/"
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	var match []string
	for _, n := range sortedKeys(r.Parameters) {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok || rest == "" || (!in.Recursive && strings.Contains(rest, "/")) {
			continue
		}
		match = append(match, n)
	}
	out := map[string]any{"Parameters": []*ssmParameterOut{}}
	var params []*ssmParameterOut
	for i := start; i < len(match) && len(params) < max; i++ {
		p, _ := s.lookupParameter(r, c.region, match[i])
		params = append(params, p)
		if len(params) == max && i+1 < len(match) {
			out["NextToken"] = strconv.Itoa(i + 1)
		}
	}
	if params != nil {
		out["Parameters"] = params
	}
	return writeSSM(c, out)
}

func (s *Server) deleteParameter(c *call) *apiError {
	var in struct{ Name string }
	if err := decodeSSM(c, &in); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	if _, ok := r.Parameters[in.Name]; !ok {
		return ssmErr("ParameterNotFound", "")
	}
	delete(r.Parameters, in.Name)
	if err := s.st.save(r); err != nil {
		return internalError("ssm", err)
	}
	return writeSSM(c, map[string]any{})
}

func (s *Server) deleteParameters(c *call) *apiError {
	var in struct{ Names []string }
	if err := decodeSSM(c, &in); err != nil {
		return err
	}
	if len(in.Names) == 0 || len(in.Names) > 10 {
		return ssmErr("ValidationException", "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and 10")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	deleted, invalid := []string{}, []string{}
	for _, n := range in.Names {
		if _, ok := r.Parameters[n]; ok {
			delete(r.Parameters, n)
			deleted = append(deleted, n)
		} else {
			invalid = append(invalid, n)
		}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ssm", err)
	}
	return writeSSM(c, map[string]any{"DeletedParameters": deleted, "InvalidParameters": invalid})
}
