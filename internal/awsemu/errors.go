package awsemu

import (
	"encoding/json"
	"encoding/xml"
	"net/http"
	"strconv"
)

// apiError is an error answer, written in the envelope of the service that was called.
type apiError struct {
	status  int
	code    string
	message string
	reason  string // EBS direct: the Reason member of ValidationException and friends

	// S3 adds these elements to its error document when they are known.
	bucket, key, region string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func (s *Server) writeError(c *call, e *apiError) {
	h := c.w.Header()
	switch c.service {
	case "ec2":
		type xmlErr struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		}
		type xmlResp struct {
			XMLName   xml.Name `xml:"Response"`
			Errors    []xmlErr `xml:"Errors>Error"`
			RequestID string   `xml:"RequestID"`
		}
		body, _ := xml.Marshal(xmlResp{Errors: []xmlErr{{e.code, e.message}}, RequestID: c.requestID})
		h.Set("Content-Type", "text/xml;charset=UTF-8")
		c.w.WriteHeader(e.status)
		_, _ = c.w.Write(append([]byte(xml.Header), body...))
	case "ebs":
		m := map[string]string{"Message": e.message}
		if e.reason != "" {
			m["Reason"] = e.reason
		}
		body, _ := json.Marshal(m)
		h.Set("Content-Type", "application/json")
		h.Set("X-Amzn-Errortype", e.code)
		h.Set("X-Amzn-Requestid", c.requestID)
		c.w.WriteHeader(e.status)
		_, _ = c.w.Write(body)
	case "ssm":
		body, _ := json.Marshal(map[string]string{"__type": e.code, "message": e.message})
		h.Set("Content-Type", "application/x-amz-json-1.1")
		h.Set("X-Amzn-Requestid", c.requestID)
		c.w.WriteHeader(e.status)
		_, _ = c.w.Write(body)
	default:
		h.Set("X-Amz-Request-Id", c.requestID)
		if c.r.Method == http.MethodHead {
			// S3 answers HEAD errors with the status alone.
			c.w.WriteHeader(e.status)
			return
		}
		type xmlErr struct {
			XMLName   xml.Name `xml:"Error"`
			Code      string   `xml:"Code"`
			Message   string   `xml:"Message"`
			Bucket    string   `xml:"BucketName,omitempty"`
			Key       string   `xml:"Key,omitempty"`
			Region    string   `xml:"Region,omitempty"`
			RequestID string   `xml:"RequestId"`
		}
		body, _ := xml.Marshal(xmlErr{Code: e.code, Message: e.message, Bucket: e.bucket, Key: e.key, Region: e.region, RequestID: c.requestID})
		h.Set("Content-Type", "application/xml")
		h.Set("Content-Length", strconv.Itoa(len(xml.Header)+len(body)))
		c.w.WriteHeader(e.status)
		_, _ = c.w.Write(append([]byte(xml.Header), body...))
	}
}

// Constructors for the errors each service documents.

func ec2Err(code, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: msg}
}

func ebsValidation(reason, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "ValidationException", reason: reason, message: msg}
}

func ebsNotFound(msg string) *apiError {
	return &apiError{status: http.StatusNotFound, code: "ResourceNotFoundException", reason: "SNAPSHOT_NOT_FOUND", message: msg}
}

func ssmErr(code, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: msg}
}

func s3Err(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, message: msg}
}

func internalError(service string, err error) *apiError {
	code := map[string]string{"ec2": "InternalError", "ebs": "InternalServerException", "ssm": "InternalServerError", "s3": "InternalError"}[service]
	return &apiError{status: http.StatusInternalServerError, code: code, message: "awsemu: " + err.Error()}
}
