package awsemu

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EC2 (query protocol, XML answers).

const ec2Xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

type ec2Handler func(s *Server, c *call) *apiError

var ec2Ops = map[string]ec2Handler{
	"RegisterImage":               (*Server).registerImage,
	"DescribeImages":              (*Server).describeImages,
	"DeregisterImage":             (*Server).deregisterImage,
	"CopyImage":                   (*Server).copyImage,
	"ModifyImageAttribute":        (*Server).modifyImageAttribute,
	"DescribeImageAttribute":      (*Server).describeImageAttribute,
	"EnableImageDeprecation":      (*Server).enableImageDeprecation,
	"DisableImageDeprecation":     (*Server).disableImageDeprecation,
	"DescribeSnapshots":           (*Server).describeSnapshots,
	"DeleteSnapshot":              (*Server).deleteSnapshot,
	"ModifySnapshotAttribute":     (*Server).modifySnapshotAttribute,
	"DescribeSnapshotAttribute":   (*Server).describeSnapshotAttribute,
	"CreateTags":                  (*Server).createTags,
	"DeleteTags":                  (*Server).deleteTags,
	"DescribeTags":                (*Server).describeTags,
	"ImportSnapshot":              (*Server).importSnapshot,
	"DescribeImportSnapshotTasks": (*Server).describeImportSnapshotTasks,
	"DescribeRegions":             (*Server).describeRegions,
}

func (s *Server) routeEC2(c *call) *apiError {
	if err := c.readBody(); err != nil {
		return err
	}
	q, err := url.ParseQuery(string(c.body))
	if err != nil {
		return ec2Err("MalformedQueryString", err.Error())
	}
	for k, v := range c.r.URL.Query() {
		q[k] = append(q[k], v...)
	}
	c.form = form(q)
	c.op = c.form.get("Action")
	if c.op == "" {
		return ec2Err("MissingAction", "The request must contain the parameter Action")
	}
	return nil
}

func (s *Server) serveEC2(c *call) *apiError {
	h, ok := ec2Ops[c.op]
	if !ok {
		return ec2Err("InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", c.op))
	}
	if dry, _ := c.form.boolean("DryRun"); dry {
		return &apiError{status: http.StatusPreconditionFailed, code: "DryRunOperation", message: "Request would have succeeded, but DryRun flag is set."}
	}
	return h(s, c)
}

// ec2Meta is in every EC2 answer, whose element is named after the operation.
type ec2Meta struct {
	RequestID string `xml:"requestId"`
}

func (m *ec2Meta) meta() *ec2Meta { return m }

type ec2Response interface{ meta() *ec2Meta }

// ec2Return is the answer of the operations that only say they succeeded.
type ec2Return struct {
	ec2Meta
	Return bool `xml:"return"`
}

func ec2OK(c *call, v ec2Response) *apiError {
	v.meta().RequestID = c.requestID
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	start := xml.StartElement{Name: xml.Name{Local: c.op + "Response"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: ec2Xmlns}}}
	if err := xml.NewEncoder(&buf).EncodeElement(v, start); err != nil {
		return internalError("ec2", err)
	}
	c.w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write(buf.Bytes())
	return nil
}

func ec2Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// form holds query-protocol parameters: Name, Name.N, Name.N.Member.
type form url.Values

func (f form) get(k string) string { return url.Values(f).Get(k) }

func (f form) has(k string) bool { _, ok := f[k]; return ok }

// indexes returns, in order, the N of the parameters named prefix.N or prefix.N.something.
func (f form) indexes(prefix string) []int {
	seen := map[int]bool{}
	for k := range f {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil {
			seen[i] = true
		}
	}
	idx := make([]int, 0, len(seen))
	for i := range seen {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

// list returns the values of prefix.N in order.
func (f form) list(prefix string) []string {
	var out []string
	for _, i := range f.indexes(prefix) {
		if v, ok := f[fmt.Sprintf("%s.%d", prefix, i)]; ok {
			out = append(out, v...)
		}
	}
	return out
}

func (f form) boolean(k string) (v, set bool) {
	s := f.get(k)
	if s == "" {
		return false, false
	}
	return strings.EqualFold(s, "true"), true
}

func (f form) integer(k string) (int64, bool, *apiError) {
	s := f.get(k)
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, true, ec2Err("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter %s is invalid. It must be an integer.", s, k))
	}
	return n, true, nil
}

type filter struct {
	Name   string
	Values []string
}

func (f form) filters(prefix string) []filter {
	var out []filter
	for _, i := range f.indexes(prefix) {
		p := fmt.Sprintf("%s.%d", prefix, i)
		out = append(out, filter{Name: f.get(p + ".Name"), Values: f.list(p + ".Value")})
	}
	return out
}

type tagKV struct {
	Key, Value string
	HasValue   bool
}

func (f form) tagList(prefix string) []tagKV {
	var out []tagKV
	for _, i := range f.indexes(prefix) {
		p := fmt.Sprintf("%s.%d", prefix, i)
		out = append(out, tagKV{Key: f.get(p + ".Key"), Value: f.get(p + ".Value"), HasValue: f.has(p + ".Value")})
	}
	return out
}

// tagSpecs returns the tags of TagSpecification.N by resource type, checking the types allowed.
func (f form) tagSpecs(allowed ...string) (map[string]map[string]string, *apiError) {
	out := map[string]map[string]string{}
	for _, i := range f.indexes("TagSpecification") {
		p := fmt.Sprintf("TagSpecification.%d", i)
		rt := f.get(p + ".ResourceType")
		ok := false
		for _, a := range allowed {
			ok = ok || rt == a
		}
		if !ok {
			return nil, ec2Err("InvalidParameterValue", fmt.Sprintf("'%s' is not a valid taggable resource type for this operation.", rt))
		}
		tags := out[rt]
		if tags == nil {
			tags = map[string]string{}
			out[rt] = tags
		}
		for _, t := range f.tagList(p + ".Tag") {
			if msg := checkTag(t.Key, t.Value); msg != "" {
				return nil, ec2Err("InvalidParameterValue", msg)
			}
			tags[t.Key] = t.Value
		}
		if len(tags) > 50 {
			return nil, ec2Err("TagLimitExceeded", "The maximum number of tags per resource is 50.")
		}
	}
	return out, nil
}

// matchFilters says whether a resource passes every filter. attr gives the resource's values for a
// filter name and whether the name is known.
func matchFilters(filters []filter, attr func(name string) ([]string, bool)) (bool, *apiError) {
	for _, fl := range filters {
		vals, known := attr(fl.Name)
		if !known {
			return false, ec2Err("InvalidParameterValue", fmt.Sprintf("The filter '%s' is invalid", fl.Name))
		}
		hit := false
		for _, want := range fl.Values {
			for _, have := range vals {
				if globMatch(want, have) {
					hit = true
				}
			}
		}
		if !hit {
			return false, nil
		}
	}
	return true, nil
}

// tagAttr answers the tag filters (tag:KEY, tag-key, tag-value) for a resource's tags.
func tagAttr(tags map[string]string, name string) ([]string, bool) {
	if k, ok := strings.CutPrefix(name, "tag:"); ok {
		if v, ok := tags[k]; ok {
			return []string{v}, true
		}
		return nil, true
	}
	switch name {
	case "tag-key":
		return sortedKeys(tags), true
	case "tag-value":
		var vals []string
		for _, k := range sortedKeys(tags) {
			vals = append(vals, tags[k])
		}
		return vals, true
	}
	return nil, false
}

// globMatch matches EC2 filter values: '*' any run of characters, '?' one character, '\' escapes.
func globMatch(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '*':
		for i := 0; i <= len(s); i++ {
			if globMatch(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	case '?':
		return s != "" && globMatch(pattern[1:], s[1:])
	case '\\':
		if len(pattern) > 1 {
			return s != "" && s[0] == pattern[1] && globMatch(pattern[2:], s[1:])
		}
	}
	return s != "" && s[0] == pattern[0] && globMatch(pattern[1:], s[1:])
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func xmlTags(tags map[string]string) []xmlTag {
	var out []xmlTag
	for _, k := range sortedKeys(tags) {
		out = append(out, xmlTag{k, tags[k]})
	}
	return out
}

func boolStr(b bool) string { return strconv.FormatBool(b) }

// ownerMatches says whether an Owner/OwnerId parameter value names this server's account.
func (s *Server) ownerMatches(owners []string) bool {
	if len(owners) == 0 {
		return true
	}
	for _, o := range owners {
		if o == "self" || o == s.cfg.accountID {
			return true
		}
	}
	return false
}

// Regions.

var knownRegions = []string{
	"af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
	"ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
	"ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1",
	"eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1",
	"me-south-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
}

var optInRegions = map[string]bool{
	"af-south-1": true, "ap-east-1": true, "ap-south-2": true, "ap-southeast-3": true, "ap-southeast-4": true,
	"ca-west-1": true, "eu-central-2": true, "eu-south-1": true, "eu-south-2": true, "il-central-1": true,
	"me-central-1": true, "me-south-1": true,
}

func (s *Server) describeRegions(c *call) *apiError {
	type xmlRegion struct {
		RegionName     string `xml:"regionName"`
		RegionEndpoint string `xml:"regionEndpoint"`
		OptInStatus    string `xml:"optInStatus"`
	}
	type resp struct {
		ec2Meta
		Regions []xmlRegion `xml:"regionInfo>item"`
	}
	all, _ := c.form.boolean("AllRegions")
	names := c.form.list("RegionName")
	for _, n := range names {
		found := false
		for _, k := range knownRegions {
			found = found || k == n
		}
		if !found {
			return ec2Err("InvalidParameterValue", fmt.Sprintf("Invalid region names: [%s]", n))
		}
	}
	filters := c.form.filters("Filter")
	out := &resp{}
	for _, n := range knownRegions {
		status := "opt-in-not-required"
		if optInRegions[n] {
			status = "not-opted-in"
		}
		if len(names) > 0 {
			want := false
			for _, w := range names {
				want = want || w == n
			}
			if !want {
				continue
			}
		} else if !all && status == "not-opted-in" {
			continue
		}
		x := xmlRegion{RegionName: n, RegionEndpoint: "ec2." + n + ".amazonaws.com", OptInStatus: status}
		ok, err := matchFilters(filters, func(name string) ([]string, bool) {
			switch name {
			case "region-name":
				return []string{x.RegionName}, true
			case "endpoint":
				return []string{x.RegionEndpoint}, true
			case "opt-in-status":
				return []string{x.OptInStatus}, true
			}
			return nil, false
		})
		if err != nil {
			return err
		}
		if ok {
			out.Regions = append(out.Regions, x)
		}
	}
	return ec2OK(c, out)
}

// Tags.

// taggable finds the tags of a resource by ID.
func (s *Server) taggable(r *region, id string) (*map[string]string, string, *apiError) {
	switch {
	case strings.HasPrefix(id, "ami-"):
		if im, ok := r.Images[id]; ok {
			return &im.Tags, "image", nil
		}
		return nil, "", ec2Err("InvalidAMIID.NotFound", fmt.Sprintf("The image id '[%s]' does not exist", id))
	case strings.HasPrefix(id, "snap-"):
		if sn, ok := r.Snapshots[id]; ok {
			return &sn.Tags, "snapshot", nil
		}
		return nil, "", ec2Err("InvalidSnapshot.NotFound", fmt.Sprintf("The snapshot '%s' does not exist.", id))
	case strings.HasPrefix(id, "import-snap-"):
		if t, ok := r.ImportTasks[id]; ok {
			return &t.Tags, "import-snapshot-task", nil
		}
		return nil, "", ec2Err("InvalidConversionTaskId", fmt.Sprintf("The import task '%s' does not exist.", id))
	}
	return nil, "", ec2Err("InvalidID", fmt.Sprintf("The ID '%s' is not valid", id))
}

func (s *Server) createTags(c *call) *apiError {
	ids := c.form.list("ResourceId")
	if len(ids) == 0 {
		return ec2Err("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags := c.form.tagList("Tag")
	if len(tags) == 0 {
		return ec2Err("MissingParameter", "The request must contain the parameter tagSet")
	}
	for _, t := range tags {
		if msg := checkTag(t.Key, t.Value); msg != "" {
			return ec2Err("InvalidParameterValue", msg)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	var targets []*map[string]string
	for _, id := range ids {
		m, _, err := s.taggable(r, id)
		if err != nil {
			return err
		}
		n := len(*m)
		for _, t := range tags {
			if _, ok := (*m)[t.Key]; !ok {
				n++
			}
		}
		if n > 50 {
			return ec2Err("TagLimitExceeded", fmt.Sprintf("The maximum number of tags per resource is 50 (%s)", id))
		}
		targets = append(targets, m)
	}
	for _, m := range targets {
		if *m == nil {
			*m = map[string]string{}
		}
		for _, t := range tags {
			(*m)[t.Key] = t.Value
		}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}

func (s *Server) deleteTags(c *call) *apiError {
	ids := c.form.list("ResourceId")
	if len(ids) == 0 {
		return ec2Err("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags := c.form.tagList("Tag")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	var targets []*map[string]string
	for _, id := range ids {
		m, _, err := s.taggable(r, id)
		if err != nil {
			return err
		}
		targets = append(targets, m)
	}
	for _, m := range targets {
		if len(tags) == 0 {
			*m = nil
			continue
		}
		for _, t := range tags {
			if v, ok := (*m)[t.Key]; ok && (!t.HasValue || v == t.Value) {
				delete(*m, t.Key)
			}
		}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ec2", err)
	}
	return ec2OK(c, &ec2Return{Return: true})
}

func (s *Server) describeTags(c *call) *apiError {
	type xmlTagDesc struct {
		ResourceID   string `xml:"resourceId"`
		ResourceType string `xml:"resourceType"`
		Key          string `xml:"key"`
		Value        string `xml:"value"`
	}
	type resp struct {
		ec2Meta
		Tags []xmlTagDesc `xml:"tagSet>item"`
	}
	filters := c.form.filters("Filter")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	var all []xmlTagDesc
	add := func(id, typ string, tags map[string]string) {
		for _, k := range sortedKeys(tags) {
			all = append(all, xmlTagDesc{id, typ, k, tags[k]})
		}
	}
	for _, id := range sortedKeys(r.Images) {
		add(id, "image", r.Images[id].Tags)
	}
	for _, id := range sortedKeys(r.Snapshots) {
		add(id, "snapshot", r.Snapshots[id].Tags)
	}
	for _, id := range sortedKeys(r.ImportTasks) {
		add(id, "import-snapshot-task", r.ImportTasks[id].Tags)
	}
	out := &resp{}
	for _, t := range all {
		ok, err := matchFilters(filters, func(name string) ([]string, bool) {
			switch name {
			case "resource-id":
				return []string{t.ResourceID}, true
			case "resource-type":
				return []string{t.ResourceType}, true
			case "key":
				return []string{t.Key}, true
			case "value":
				return []string{t.Value}, true
			}
			if k, ok := strings.CutPrefix(name, "tag:"); ok {
				if k == t.Key {
					return []string{t.Value}, true
				}
				return nil, true
			}
			return nil, false
		})
		if err != nil {
			return err
		}
		if ok {
			out.Tags = append(out.Tags, t)
		}
	}
	return ec2OK(c, out)
}
