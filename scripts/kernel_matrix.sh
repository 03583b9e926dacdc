#!/usr/bin/env bash
# The agreement tests (pytest -m agreement) under other CPU kernels, at 1 and 2 threads.
#
# A test that asserts two configurations agree (batch sizes, workers, threads, torchrun ranks,
# the cone against the full-size pass, chunking, the engine against autograd or Captum) must
# hold on any CPU, not only on the one it was written on. These settings make this machine's
# PyTorch pick other BLAS, vectorised and oneDNN kernels, with other last bits:
#
#   default                      what PyTorch picks for this CPU
#   MKL_CBWR=COMPATIBLE          MKL's conditional-numerical-reproducibility path
#   MKL_ENABLE_INSTRUCTIONS=AVX2 MKL without AVX-512 (a no-op on a CPU without it)
#   ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2
#                                ATen's scalar kernels, oneDNN without AVX-512
#
# Usage: scripts/kernel_matrix.sh [SETTING_NUMBER ...]   (1-4; all four by default)
#        THREADS="1 2" RUNS=1 PYTHON=.venv/bin/python  (the defaults)
#
# The zoo-wide agreement tests take one model per family here (DECONVVIZ_TEST_ZOO=families):
# `make test` runs them on the whole zoo once; this runs the kernels' arithmetic eight times.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
THREADS=${THREADS:-"1 2"}
RUNS=${RUNS:-1}
SETTINGS=(
  ""
  "MKL_CBWR=COMPATIBLE"
  "MKL_ENABLE_INSTRUCTIONS=AVX2"
  "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2"
)
chosen=("$@")
[ ${#chosen[@]} -eq 0 ] && chosen=(1 2 3 4)
failed=0
for number in "${chosen[@]}"; do
  setting=${SETTINGS[$((number - 1))]}
  for threads in $THREADS; do
    for run in $(seq "$RUNS"); do
      label="${setting:-default} OMP_NUM_THREADS=$threads (run $run of $RUNS)"
      start=$(date +%s)
      # at 1 thread, two pytest workers of 1 thread each (one per core); at 2 threads, one
      # process (two 2-thread workers on two cores measured slower)
      workers=""; [ "$threads" = 1 ] && workers="-n 2 --dist loadfile --no-loadscope-reorder"
      if env $setting OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" \
          DECONVVIZ_TEST_ZOO=families \
          "$PYTHON" -m pytest -q -m agreement -p no:cacheprovider $workers \
          >/tmp/kernel-matrix.$$ 2>&1; then
        echo "ok    $label: $(tail -1 /tmp/kernel-matrix.$$ | sed 's/=//g') $(( $(date +%s) - start )) s"
      else
        echo "FAIL  $label"; cat /tmp/kernel-matrix.$$; failed=1
      fi
    done
  done
done
rm -f /tmp/kernel-matrix.$$
exit $failed
