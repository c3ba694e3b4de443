package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestHelpOfEverySubcommandExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"bmc", "--help"}, {"bmc", "-h"}, {"up", "--help"}, {"down", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"metalhall-lab"}, args...), &out, &errb); code != 0 {
			t.Errorf("metalhall-lab %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		if out.Len()+errb.Len() == 0 {
			t.Errorf("metalhall-lab %s printed nothing", strings.Join(args, " "))
		}
	}
}

func TestABadFlagFailsWithItsName(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"metalhall-lab", "bmc", "-no-such-flag"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "no-such-flag") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
