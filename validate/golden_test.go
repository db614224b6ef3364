package validate

import "flag"

// update makes golden tests rewrite their golden files from what the code produces now:
// go test ./validate/ -update
var update = flag.Bool("update", false, "rewrite golden files under testdata/ with the current output")
