#!/bin/sh
# test-stress runs the tests whose subject is concurrency (limits, locks,
# hangs, cancellation, resumption) COUNT times with the race detector while
# LOAD busy loops keep the CPUs loaded, the conditions under which timing
# assumptions break. Any failure fails the run. `make test-stress`.
set -eu
COUNT=${COUNT:-20}
LOAD=${LOAD:-2}
GO=${GO:-go}

# package  tests (a -run pattern)
TESTS='
./provisioner ^(TestSchedulerLimits|TestOneJobPerMachineAndCancel|TestResumeAfterStopAtEveryStep|TestConcurrentPowerOnsDoNotShareHeadroom|TestCommissionWaitsForTheRackBudgetThenPowersOn)$
./bmc ^(TestRedfishHangTimesOutWithoutBlockingOthers|TestIPMIHungBMCDoesNotBlockOthers|TestRedfishConcurrentFleet|TestIPMIConcurrent|TestAddrLocksDoNotGrow)$
./inventory ^(TestConcurrentWriters|TestEventsCarriedByAJobUpdateAreOneCommitAndWakeTheFeed)$
./api ^TestEventFeed
./images ^(TestConcurrentImportsAndServes|TestServeConcurrencyLimit)$
./netboot ^(TestTFTPConcurrencyBound|TestAsyncRecorderConcurrent|TestDHCPServerConcurrent)$
./inventory/kv/etcdkv ^(TestConformance|TestLargeTransactionIsSeenWholeOrNotAtAll|TestWritersMeetingAnIntentFinishItAlongsideItsWriter|TestFollowDeliversTheOtherInstancesCommitsInOrder)$
./cluster ^(TestTwoMembersClaimingOneJobExactlyOneWins|TestOwnerThatVanishesIsTakenOverAfterTheTTL)$
./provisioner ^(TestAJobRunsOnExactlyOneInstance|TestOwnerDeathAtAnAgentStepBootsTheMachineAgainFromTheNewOwner|TestDynamicLeasesAreClaimedInTheStoreSoTwoInstancesNeverShareAnAddress)$
'

pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
i=0
while [ "$i" -lt "$LOAD" ]; do
	sh -c 'while :; do :; done' &
	pids="$pids $!"
	i=$((i + 1))
done
echo "stress: $COUNT runs each under $LOAD busy loops"

fail=0
echo "$TESTS" | while read -r pkg run; do
	[ -n "$pkg" ] || continue
	echo "== $pkg $run"
	if ! $GO test -race -count="$COUNT" -timeout 60m -run "$run" "$pkg"; then
		echo "stress: FAILED: $pkg $run"
		exit 1
	fi
done || fail=1
[ "$fail" = 0 ] && echo "stress: 0 failures" || { echo "stress: failures above"; exit 1; }
