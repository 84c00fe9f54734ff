// env_test.go: an /init env that no process could start with is refused
// before it is merged, so it cannot make later inits fail.

package actionloop

import (
	"os"
	"strings"
)

// A NUL in a name, a NUL in a value, and a value longer than one execve
// string are refused; the next /init with a sane env succeeds.
func ExampleServer_init_badEnv() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":{"code":"ok","env":{"A\u0000B":"x"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"A":"x\u0000y"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"BIG":"`+strings.Repeat("v", 200<<10)+`"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"FINE":"1"}}}`)
	// Output:
	// /init -> 400 {"error":"invalid environment variable name \"A\\x00B\" in the init env"}
	// /init -> 400 {"error":"the init env value of A contains a NUL byte"}
	// /init -> 400 {"error":"the init env value of BIG is too long (204800 bytes; at most 131067)"}
	// launcher started
	// /init -> 200 {"ok":true}
}

// An init that fails to start keeps none of its env: a later init starts.
func ExampleServer_init_failedEnvNotKept() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":{"code":"ok","env":{"FIXTURE_EXIT_AT_START":"3"}}}`)
	h.show("/init", `{"value":{"code":"ok"}}`)
	// Output:
	// /init -> 502 {"error":"cannot start action: Command exited abruptly during initialization."}
	// launcher started
	// /init -> 200 {"ok":true}
}
