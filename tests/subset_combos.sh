#!/bin/sh
# Every combination of the EVLOOP_NO_* subsystem macros the header offers,
# one a line (the full build, the empty line, first). EVLOOP_NO_EXECUTOR
# needs EVLOOP_NO_NET and EVLOOP_NO_FS (DNS and files run on the executor);
# EVLOOP_NO_NET brings EVLOOP_NO_PROCESS with it, so that pair is not
# listed twice. The compile checks build each of them.
for net in "" " -DEVLOOP_NO_NET"; do
  for proc in "" " -DEVLOOP_NO_PROCESS"; do
    [ -n "$net" ] && [ -n "$proc" ] && continue
    for fs in "" " -DEVLOOP_NO_FS"; do
      for sync in "" " -DEVLOOP_NO_SYNC"; do
        for comp in "" " -DEVLOOP_NO_COMPOSE"; do
          for ex in "" " -DEVLOOP_NO_EXECUTOR"; do
            [ -n "$ex" ] && { [ -z "$net" ] || [ -z "$fs" ]; } && continue
            echo "$net$proc$fs$sync$comp$ex" | sed 's/^ //'
          done
        done
      done
    done
  done
done
