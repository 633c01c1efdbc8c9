#!/bin/bash
# Issue 20 lever: smaller dense canvases (48 and 40 px), baseline seed 0, two 1-thread jobs at a time.
cd /work/exp
export PYTHONPATH=/work/exp OMP_NUM_THREADS=1
for s in 48 40; do
  for t in detect segment; do
    ( /usr/bin/time -f "%e s wall" /work/venv/bin/cabench run probe-$t-$s --rows baseline --seed 0 --profile paper \
      --data digits=/work/data/digits$s --channels-last --workers 0 --runs-dir /tmp/densem --json \
      > /tmp/densem/$t-$s.json 2> /tmp/densem/$t-$s.err ) &
  done
  wait
done
echo done > /tmp/densem/canvas.done
