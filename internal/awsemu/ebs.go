package awsemu

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EBS direct APIs (REST JSON): StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
// ListSnapshotBlocks, GetSnapshotBlock, ListChangedBlocks.

const (
	maxVolumeSizeGiB = 64 << 10 // 64 TiB, the largest EBS direct snapshot
	blockTokenTTL    = 7 * 24 * time.Hour
)

var blockBufs = sync.Pool{New: func() any { b := make([]byte, blockSize+1); return &b }}

func (s *Server) routeEBS(c *call) *apiError {
	parts := strings.Split(strings.Trim(c.r.URL.Path, "/"), "/")
	m := c.r.Method
	switch {
	case m == http.MethodPost && len(parts) == 1 && parts[0] == "snapshots":
		c.op = "StartSnapshot"
	case m == http.MethodPost && len(parts) == 3 && parts[0] == "snapshots" && parts[1] == "completion":
		c.op = "CompleteSnapshot"
	case m == http.MethodPut && len(parts) == 4 && parts[0] == "snapshots" && parts[2] == "blocks":
		c.op = "PutSnapshotBlock"
		return nil // streamed
	case m == http.MethodGet && len(parts) == 3 && parts[0] == "snapshots" && parts[2] == "blocks":
		c.op = "ListSnapshotBlocks"
	case m == http.MethodGet && len(parts) == 4 && parts[0] == "snapshots" && parts[2] == "blocks":
		c.op = "GetSnapshotBlock"
	case m == http.MethodGet && len(parts) == 3 && parts[0] == "snapshots" && parts[2] == "changedblocks":
		c.op = "ListChangedBlocks"
	default:
		return &apiError{status: http.StatusNotFound, code: "UnknownOperationException", message: fmt.Sprintf("no EBS direct operation for %s %s", m, c.r.URL.Path)}
	}
	return c.readBody()
}

// ebsSnapshotIDFromPath finds the snapshot ID in an EBS direct path.
func ebsSnapshotIDFromPath(p string) string {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case len(parts) == 3 && parts[1] == "completion":
		return parts[2]
	case len(parts) >= 2 && parts[0] == "snapshots":
		return parts[1]
	}
	return ""
}

func (s *Server) serveEBS(c *call) *apiError {
	switch c.op {
	case "StartSnapshot":
		return s.startSnapshot(c)
	case "PutSnapshotBlock":
		return s.putSnapshotBlock(c)
	case "CompleteSnapshot":
		return s.completeSnapshot(c)
	case "ListSnapshotBlocks":
		return s.listSnapshotBlocks(c)
	case "GetSnapshotBlock":
		return s.getSnapshotBlock(c)
	case "ListChangedBlocks":
		return s.listChangedBlocks(c)
	}
	return &apiError{status: http.StatusNotFound, code: "UnknownOperationException", message: c.op}
}

func writeJSON(c *call, status int, v any) {
	b, _ := json.Marshal(v)
	h := c.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Requestid", c.requestID)
	c.w.WriteHeader(status)
	_, _ = c.w.Write(b)
}

// epoch is a JSON timestamp in epoch seconds, as restJson1 and awsJson1.1 bodies carry them.
type epoch time.Time

func (t epoch) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(float64(time.Time(t).UnixMilli())/1000, 'f', 3, 64)), nil
}

type ebsTag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type startSnapshotInput struct {
	VolumeSize       *int64   `json:"VolumeSize"`
	ParentSnapshotID *string  `json:"ParentSnapshotId"`
	Tags             []ebsTag `json:"Tags"`
	Description      *string  `json:"Description"`
	ClientToken      *string  `json:"ClientToken"`
	Encrypted        *bool    `json:"Encrypted"`
	KmsKeyArn        *string  `json:"KmsKeyArn"`
	Timeout          *int     `json:"Timeout"`
}

func (s *Server) defaultKMSKey(regionName string) string {
	return "arn:aws:kms:" + regionName + ":" + s.cfg.accountID + ":alias/aws/ebs"
}

func (s *Server) startSnapshot(c *call) *apiError {
	var in startSnapshotInput
	if err := json.Unmarshal(c.body, &in); err != nil {
		return &apiError{status: http.StatusBadRequest, code: "SerializationException", message: err.Error()}
	}
	if in.VolumeSize == nil || *in.VolumeSize < 1 || *in.VolumeSize > maxVolumeSizeGiB {
		return ebsValidation("INVALID_VOLUME_SIZE", fmt.Sprintf("VolumeSize must be between 1 and %d GiB", maxVolumeSizeGiB))
	}
	timeout := 60
	if in.Timeout != nil {
		timeout = *in.Timeout
		if timeout < 10 || timeout > 4320 {
			return ebsValidation("INVALID_PARAMETER_VALUE", "Timeout must be between 10 and 4320 minutes")
		}
	}
	if in.Description != nil && len(*in.Description) > 255 {
		return ebsValidation("INVALID_PARAMETER_VALUE", "Description must be at most 255 characters")
	}
	tags := map[string]string{}
	for _, t := range in.Tags {
		if err := checkTag(t.Key, t.Value); err != "" {
			return ebsValidation("INVALID_TAG", err)
		}
		tags[t.Key] = t.Value
	}
	if len(tags) > 50 {
		return ebsValidation("INVALID_TAG", "a snapshot can have at most 50 tags")
	}
	encrypted := in.Encrypted != nil && *in.Encrypted
	kms := ""
	if in.KmsKeyArn != nil {
		kms = *in.KmsKeyArn
		if !encrypted && (in.ParentSnapshotID == nil) {
			return ebsValidation("INVALID_PARAMETER_VALUE", "KmsKeyArn can be specified only when Encrypted is true")
		}
	}
	if in.ParentSnapshotID != nil && in.Encrypted != nil {
		return ebsValidation("INVALID_PARAMETER_VALUE", "Encrypted must be omitted when ParentSnapshotId is specified")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)

	var tokenKey, params string
	if in.ClientToken != nil {
		if len(*in.ClientToken) > 64 {
			return ebsValidation("INVALID_PARAMETER_VALUE", "ClientToken must be at most 64 characters")
		}
		tokenKey = "StartSnapshot/" + *in.ClientToken
		p := in
		p.ClientToken = nil
		b, _ := json.Marshal(p)
		params = string(b)
		if t, ok := r.Tokens[tokenKey]; ok {
			if t.Params != params {
				return &apiError{status: http.StatusConflict, code: "ConflictException",
					message: "The request uses the same client token as a previous, but non-identical request. Do not reuse a client token with different requests, unless the requests are identical."}
			}
			if sn, ok := r.Snapshots[t.Resource]; ok {
				writeJSON(c, http.StatusCreated, s.startSnapshotOutput(c.region, sn))
				return nil
			}
		}
	}

	sn := &snapshot{
		ID:          newID("snap-"),
		State:       "pending",
		VolumeSize:  *in.VolumeSize,
		Tags:        tags,
		Encrypted:   encrypted,
		KmsKeyID:    kms,
		StartTime:   s.now(),
		Origin:      "ebs",
		Timeout:     timeout,
		Description: deref(in.Description),
	}
	sn.lastActivity = sn.StartTime
	if encrypted && kms == "" {
		sn.KmsKeyID = s.defaultKMSKey(c.region)
	}
	var parent *snapshot
	if in.ParentSnapshotID != nil {
		parent = r.Snapshots[*in.ParentSnapshotID]
		if parent == nil {
			return &apiError{status: http.StatusNotFound, code: "ResourceNotFoundException", reason: "SNAPSHOT_NOT_FOUND",
				message: fmt.Sprintf("The parent snapshot %s does not exist", *in.ParentSnapshotID)}
		}
		if parent.State != "completed" {
			return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("The parent snapshot %s is not completed", parent.ID))
		}
		if sn.VolumeSize < parent.VolumeSize {
			return ebsValidation("INVALID_VOLUME_SIZE", fmt.Sprintf("VolumeSize must be at least the %d GiB of the parent snapshot", parent.VolumeSize))
		}
		sn.ParentID = parent.ID
		sn.Encrypted = parent.Encrypted
		if parent.Encrypted && kms == "" {
			sn.KmsKeyID = parent.KmsKeyID
		} else if kms != "" {
			sn.Encrypted = true
		}
	}
	bs, err := openBlockSet(s.st.snapshotPath(c.region, sn.ID))
	if err != nil {
		return internalError("ebs", err)
	}
	sn.blocks = bs
	if parent != nil {
		if err := parent.blocks.copyTo(bs, false); err != nil {
			bs.remove()
			return internalError("ebs", err)
		}
	}
	r.Snapshots[sn.ID] = sn
	if tokenKey != "" {
		r.Tokens[tokenKey] = clientToken{Op: "StartSnapshot", Params: params, Resource: sn.ID}
	}
	if err := s.st.save(r); err != nil {
		return internalError("ebs", err)
	}
	writeJSON(c, http.StatusCreated, s.startSnapshotOutput(c.region, sn))
	return nil
}

func (s *Server) startSnapshotOutput(regionName string, sn *snapshot) map[string]any {
	out := map[string]any{
		"SnapshotId": sn.ID,
		"OwnerId":    s.cfg.accountID,
		"Status":     sn.State,
		"StartTime":  epoch(sn.StartTime),
		"VolumeSize": sn.VolumeSize,
		"BlockSize":  blockSize,
		"SseType":    "none",
	}
	if sn.Description != "" {
		out["Description"] = sn.Description
	}
	if len(sn.Tags) > 0 {
		tags := []ebsTag{}
		for _, k := range sortedKeys(sn.Tags) {
			tags = append(tags, ebsTag{k, sn.Tags[k]})
		}
		out["Tags"] = tags
	}
	if sn.ParentID != "" {
		out["ParentSnapshotId"] = sn.ParentID
	}
	if sn.Encrypted {
		out["KmsKeyArn"] = sn.KmsKeyID
		out["SseType"] = "sse-kms"
	}
	return out
}

// snapshotForBlocks finds a snapshot of the caller's region for the block operations.
func (s *Server) snapshotForBlocks(c *call, id string) (*snapshot, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.st.region(c.region)
	sn := r.Snapshots[id]
	if sn == nil {
		return nil, ebsNotFound(fmt.Sprintf("The snapshot '%s' does not exist.", id))
	}
	return sn, nil
}

func (s *Server) putSnapshotBlock(c *call) *apiError {
	parts := strings.Split(strings.Trim(c.r.URL.Path, "/"), "/")
	id := parts[1]
	idx, err := strconv.ParseInt(parts[3], 10, 32)
	if err != nil || idx < 0 {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("Invalid block index %q", parts[3]))
	}
	h := c.r.Header
	if dl := h.Get("X-Amz-Data-Length"); dl != strconv.Itoa(blockSize) {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("DataLength must be %d bytes, not %q", blockSize, dl))
	}
	if c.r.ContentLength >= 0 && c.r.ContentLength != blockSize && h.Get("X-Amz-Content-Sha256") == unsignedPayload {
		return ebsValidation("INVALID_BLOCK", "Failed to read block data")
	}
	checksum := h.Get("X-Amz-Checksum")
	if checksum == "" {
		return ebsValidation("INVALID_PARAMETER_VALUE", "The x-amz-Checksum header is required")
	}
	if alg := h.Get("X-Amz-Checksum-Algorithm"); alg != "SHA256" {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("Unsupported checksum algorithm %q; only SHA256 is supported", alg))
	}
	if p := h.Get("X-Amz-Progress"); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 100 {
			return ebsValidation("INVALID_PARAMETER_VALUE", "Progress must be between 0 and 100")
		}
	}

	s.mu.Lock()
	sn := s.st.region(c.region).Snapshots[id]
	if sn == nil {
		s.mu.Unlock()
		return ebsNotFound(fmt.Sprintf("The snapshot '%s' does not exist.", id))
	}
	now := s.now()
	if sn.State == "pending" && sn.Origin == "ebs" && !sn.Sealed && now.Sub(sn.lastActivity) > time.Duration(sn.Timeout)*time.Minute {
		s.advance()
	}
	if sn.State != "pending" || sn.Sealed || sn.Origin != "ebs" {
		state := sn.State
		s.mu.Unlock()
		return ebsValidation("INVALID_SNAPSHOT_ID", fmt.Sprintf("The snapshot '%s' is %s; blocks can only be written to a pending snapshot.", id, stateWord(state, sn.Sealed)))
	}
	if idx >= sn.VolumeSize*blocksPerGiB {
		s.mu.Unlock()
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("Block index %d is beyond the %d GiB volume (last index %d)", idx, sn.VolumeSize, sn.VolumeSize*blocksPerGiB-1))
	}
	sn.lastActivity = now
	bs := sn.blocks
	s.mu.Unlock()

	if err := bs.begin(idx); err != nil {
		if errors.Is(err, errBlockConflict) {
			return ebsValidation("CONFLICTING_BLOCK_UPDATE", fmt.Sprintf("Block %d is being written by another request", idx))
		}
		return ebsValidation("INVALID_SNAPSHOT_ID", fmt.Sprintf("The snapshot '%s' is not pending", id))
	}
	defer bs.end(idx)

	bp := blockBufs.Get().(*[]byte)
	defer blockBufs.Put(bp)
	buf := *bp
	n, err := io.ReadFull(c.payload, buf[:blockSize])
	if err == nil {
		var extra int
		extra, err = io.ReadFull(c.payload, buf[blockSize:])
		if extra > 0 {
			return ebsValidation("INVALID_BLOCK", "Failed to read block data: the body is longer than DataLength")
		}
		if err == io.EOF {
			err = nil
		}
	}
	if errors.Is(err, errPayloadHash) {
		return authError("ebs", authBadSignature, "")
	}
	if err != nil || n != blockSize {
		return ebsValidation("INVALID_BLOCK", "Failed to read block data")
	}
	block := buf[:blockSize]
	sum := sha256.Sum256(block)
	if base64.StdEncoding.EncodeToString(sum[:]) != checksum {
		return ebsValidation("INVALID_BLOCK", fmt.Sprintf("The x-amz-Checksum %s of block %d does not match the SHA256 checksum of the block data", checksum, idx))
	}
	if err := bs.put(idx, block, sum, true); err != nil {
		if errors.Is(err, errSealed) {
			return ebsValidation("INVALID_SNAPSHOT_ID", fmt.Sprintf("The snapshot '%s' is not pending", id))
		}
		return internalError("ebs", err)
	}
	s.stats.blockBytes(blockSize)
	w := c.w.Header()
	w.Set("X-Amz-Checksum", checksum)
	w.Set("X-Amz-Checksum-Algorithm", "SHA256")
	w.Set("X-Amzn-Requestid", c.requestID)
	c.w.WriteHeader(http.StatusCreated)
	return nil
}

func stateWord(state string, sealed bool) string {
	if state == "pending" && sealed {
		return "completing"
	}
	return state
}

func (s *Server) completeSnapshot(c *call) *apiError {
	id := ebsSnapshotIDFromPath(c.r.URL.Path)
	h := c.r.Header
	countStr := h.Get("X-Amz-ChangedBlocksCount")
	count, err := strconv.Atoi(countStr)
	if err != nil || count < 0 {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("ChangedBlocksCount must be a number of blocks, not %q", countStr))
	}
	checksum := h.Get("X-Amz-Checksum")
	if checksum != "" {
		if alg := h.Get("X-Amz-Checksum-Algorithm"); alg != "SHA256" {
			return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("Unsupported checksum algorithm %q; only SHA256 is supported", alg))
		}
		if m := h.Get("X-Amz-Checksum-Aggregation-Method"); m != "LINEAR" {
			return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("Unsupported checksum aggregation method %q; only LINEAR is supported", m))
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	r := s.st.region(c.region)
	sn := r.Snapshots[id]
	if sn == nil {
		return ebsNotFound(fmt.Sprintf("The snapshot '%s' does not exist.", id))
	}
	if sn.Origin != "ebs" || sn.State == "error" {
		return ebsValidation("INVALID_SNAPSHOT_ID", fmt.Sprintf("The snapshot '%s' is %s and cannot be completed", id, sn.State))
	}
	n, agg := sn.blocks.writtenSummary()
	if sn.Sealed {
		// A retry of a CompleteSnapshot that was accepted: answer as the first time.
		if count != sn.ChangedBlocks {
			return ebsValidation("INVALID_SNAPSHOT_ID", fmt.Sprintf("The snapshot '%s' is already %s", id, stateWord(sn.State, true)))
		}
		writeJSON(c, http.StatusAccepted, map[string]string{"Status": sn.State})
		return nil
	}
	if count != n {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("ChangedBlocksCount is %d but %d blocks were written to snapshot '%s'", count, n, id))
	}
	if checksum != "" && base64.StdEncoding.EncodeToString(agg[:]) != checksum {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("The aggregate checksum %s does not match the LINEAR aggregate of the %d blocks written to snapshot '%s'", checksum, n, id))
	}
	sn.blocks.seal()
	sn.Sealed = true
	sn.ChangedBlocks = n
	sn.CompleteAt = s.now().Add(s.cfg.completeDelay)
	if s.cfg.completeDelay <= 0 {
		sn.State = "completed"
	}
	if err := s.st.save(r); err != nil {
		return internalError("ebs", err)
	}
	writeJSON(c, http.StatusAccepted, map[string]string{"Status": sn.State})
	return nil
}

// readableSnapshot finds a completed snapshot for the read operations.
func (s *Server) readableSnapshot(c *call, id string) (*snapshot, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	sn := s.st.region(c.region).Snapshots[id]
	if sn == nil {
		return nil, ebsNotFound(fmt.Sprintf("The snapshot '%s' does not exist.", id))
	}
	if sn.State != "completed" {
		return nil, ebsValidation("INVALID_SNAPSHOT_ID", fmt.Sprintf("The snapshot '%s' is %s; only completed snapshots can be read", id, sn.State))
	}
	return sn, nil
}

func blockToken(id string, i int64, sum [sha256.Size]byte) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%s/%d/%s", id, i, hex.EncodeToString(sum[:12]))))
}

func pageToken(id string, next int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("page/%s/%d", id, next)))
}

func parsePageToken(id, tok string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	parts := strings.Split(string(b), "/")
	if len(parts) != 3 || parts[0] != "page" || parts[1] != id {
		return 0, false
	}
	n, err := strconv.ParseInt(parts[2], 10, 64)
	return n, err == nil
}

// listParams reads maxResults, startingBlockIndex and pageToken.
func listParams(c *call, id string) (max int, start int64, aerr *apiError) {
	q := c.r.URL.Query()
	max = 10000
	if v := q.Get("maxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 || n > 10000 {
			return 0, 0, ebsValidation("INVALID_PARAMETER_VALUE", "MaxResults must be between 100 and 10000")
		}
		max = n
	}
	if v := q.Get("startingBlockIndex"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, ebsValidation("INVALID_PARAMETER_VALUE", "StartingBlockIndex must be a block index")
		}
		start = n
	}
	if v := q.Get("pageToken"); v != "" {
		n, ok := parsePageToken(id, v)
		if !ok {
			return 0, 0, ebsValidation("INVALID_PAGE_TOKEN", "The pagination token is not valid")
		}
		if n > start {
			start = n
		}
	}
	return max, start, nil
}

func (s *Server) listSnapshotBlocks(c *call) *apiError {
	id := ebsSnapshotIDFromPath(c.r.URL.Path)
	sn, aerr := s.readableSnapshot(c, id)
	if aerr != nil {
		return aerr
	}
	max, start, aerr := listParams(c, id)
	if aerr != nil {
		return aerr
	}
	type block struct {
		BlockIndex int64  `json:"BlockIndex"`
		BlockToken string `json:"BlockToken"`
	}
	blocks := []block{}
	var next string
	for _, i := range sn.blocks.indexes() {
		if i < start {
			continue
		}
		if len(blocks) == max {
			next = pageToken(id, i)
			break
		}
		e, _ := sn.blocks.entry(i)
		blocks = append(blocks, block{i, blockToken(id, i, e.sum)})
	}
	out := map[string]any{
		"Blocks":     blocks,
		"ExpiryTime": epoch(s.now().Add(blockTokenTTL)),
		"VolumeSize": sn.VolumeSize,
		"BlockSize":  blockSize,
	}
	if next != "" {
		out["NextToken"] = next
	}
	writeJSON(c, http.StatusOK, out)
	return nil
}

func (s *Server) getSnapshotBlock(c *call) *apiError {
	parts := strings.Split(strings.Trim(c.r.URL.Path, "/"), "/")
	id := parts[1]
	idx, err := strconv.ParseInt(parts[3], 10, 32)
	if err != nil || idx < 0 {
		return ebsValidation("INVALID_PARAMETER_VALUE", fmt.Sprintf("Invalid block index %q", parts[3]))
	}
	tok := c.r.URL.Query().Get("blockToken")
	if tok == "" {
		return ebsValidation("INVALID_BLOCK_TOKEN", "The blockToken parameter is required")
	}
	sn, aerr := s.readableSnapshot(c, id)
	if aerr != nil {
		return aerr
	}
	e, ok := sn.blocks.entry(idx)
	if !ok || blockToken(id, idx, e.sum) != tok {
		return ebsValidation("INVALID_BLOCK_TOKEN", fmt.Sprintf("The block token is not valid for block %d of snapshot '%s'", idx, id))
	}
	bp := blockBufs.Get().(*[]byte)
	defer blockBufs.Put(bp)
	buf := (*bp)[:blockSize]
	sum, err := sn.blocks.read(idx, buf)
	if err != nil {
		return internalError("ebs", err)
	}
	h := c.w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(blockSize))
	h.Set("X-Amz-Data-Length", strconv.Itoa(blockSize))
	h.Set("X-Amz-Checksum", base64.StdEncoding.EncodeToString(sum[:]))
	h.Set("X-Amz-Checksum-Algorithm", "SHA256")
	h.Set("X-Amzn-Requestid", c.requestID)
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write(buf)
	return nil
}

func (s *Server) listChangedBlocks(c *call) *apiError {
	second := ebsSnapshotIDFromPath(c.r.URL.Path)
	sn2, aerr := s.readableSnapshot(c, second)
	if aerr != nil {
		return aerr
	}
	var sn1 *snapshot
	if first := c.r.URL.Query().Get("firstSnapshotId"); first != "" {
		if sn1, aerr = s.readableSnapshot(c, first); aerr != nil {
			return aerr
		}
		if sn1.VolumeSize > sn2.VolumeSize {
			return ebsValidation("UNRELATED_SNAPSHOTS", "The first snapshot is larger than the second")
		}
	}
	max, start, aerr := listParams(c, second)
	if aerr != nil {
		return aerr
	}
	type changed struct {
		BlockIndex       int64  `json:"BlockIndex"`
		FirstBlockToken  string `json:"FirstBlockToken,omitempty"`
		SecondBlockToken string `json:"SecondBlockToken,omitempty"`
	}
	all := map[int64]bool{}
	for _, i := range sn2.blocks.indexes() {
		all[i] = true
	}
	if sn1 != nil {
		for _, i := range sn1.blocks.indexes() {
			all[i] = true
		}
	}
	idx := make([]int64, 0, len(all))
	for i := range all {
		if i >= start {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	blocks := []changed{}
	var next string
	for _, i := range idx {
		e2, ok2 := sn2.blocks.entry(i)
		var e1 blockEntry
		ok1 := false
		if sn1 != nil {
			e1, ok1 = sn1.blocks.entry(i)
		}
		if ok1 && ok2 && e1.sum == e2.sum {
			continue
		}
		if len(blocks) == max {
			next = pageToken(second, i)
			break
		}
		ch := changed{BlockIndex: i}
		if ok1 {
			ch.FirstBlockToken = blockToken(sn1.ID, i, e1.sum)
		}
		if ok2 {
			ch.SecondBlockToken = blockToken(second, i, e2.sum)
		}
		blocks = append(blocks, ch)
	}
	out := map[string]any{
		"ChangedBlocks": blocks,
		"ExpiryTime":    epoch(s.now().Add(blockTokenTTL)),
		"VolumeSize":    sn2.VolumeSize,
		"BlockSize":     blockSize,
	}
	if next != "" {
		out["NextToken"] = next
	}
	writeJSON(c, http.StatusOK, out)
	return nil
}

// checkTag returns why a tag is not acceptable, or "".
func checkTag(k, v string) string {
	switch {
	case k == "":
		return "Tag keys must not be empty"
	case len(k) > 128:
		return "Tag keys must be at most 128 characters"
	case len(v) > 256:
		return "Tag values must be at most 256 characters"
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return "Tag keys starting with 'aws:' are reserved for internal use"
	}
	return ""
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
