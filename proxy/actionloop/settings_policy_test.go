// settings_policy_test.go: an action's /init env can choose among secure
// settings only, unless the operator allows more.

package actionloop

import (
	"os"
)

// Weakening settings and the operator's own are refused; secure choices and
// ordinary variables pass.
func ExampleServer_init_actionSettings() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":{"code":"ok","env":{"REWIND_MEMORY":"none"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"REWIND_FILES":"off"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"REWIND_CHECKPOINT":"first-request"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"REWIND_DEBUG":"1"}}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"REWIND_MEMORY":"fork","REWIND_CHECKPOINT":"warmup","REWIND_WARMUP":"{}","PYTHONPATH":"/x"}}}`)
	// Output:
	// /init -> 400 {"error":"the action's env sets REWIND_MEMORY=none; an action may choose only auto, kernel, fork, inplace, fresh (weaker settings are the operator's, see docs/SECURITY.md)"}
	// /init -> 400 {"error":"the action's env sets REWIND_FILES, which only the operator may set (in the container's environment)"}
	// /init -> 400 {"error":"the action's env sets REWIND_CHECKPOINT=first-request; an action may choose only init, warmup (weaker settings are the operator's, see docs/SECURITY.md)"}
	// /init -> 400 {"error":"the action's env sets REWIND_DEBUG, which only the operator may set (in the container's environment)"}
	// launcher started
	// /init -> 200 {"ok":true}
}

// REWIND_ALLOW_ACTION_SETTINGS hands every setting to the action's author.
func ExampleServer_init_actionSettingsAllowed() {
	h := newHarness(os.Stdout, devNull(), "REWIND_ALLOW_ACTION_SETTINGS=1")
	defer h.close()
	h.show("/init", `{"value":{"code":"ok","env":{"REWIND_MEMORY":"none"}}}`)
	// Output:
	// launcher started
	// /init -> 200 {"ok":true}
}
