#!/bin/bash
# Each mutation on a fresh copy of the working tree; the phase/objective tests must fail.
# Usage: scripts/mutation_check.sh   (needs the venv of `make install`; prints one line per mutant)
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
run() {
  name="$1"; file="$2"; old="$3"; new="$4"
  d=${TMPDIR:-/tmp}/mmmixlab-mutants/$name; rm -rf $d; mkdir -p $d
  cp -r $SRC/mmmixlab $SRC/tests $SRC/pyproject.toml $d/
  python3 - "$d/$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
assert s.count(old) == 1, f"{old!r} found {s.count(old)} times in {p}"
open(p, "w").write(s.replace(old, new))
PY
  cd $d
  where=$($SRC/.venv/bin/python -c "import mmmixlab; print(mmmixlab.__file__)")
  out=$(timeout 900 $SRC/.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_phases.py tests/test_objectives.py tests/test_losses.py tests/test_mixing.py 2>&1 | tail -1)
  echo "$name | imports $where | $out"
}
run no_detach_joint mmmixlab/objectives.py 'return feats["A"].detach()' 'return feats["A"]'
run im_uses_lam mmmixlab/objectives.py 'return _aligned(stage1_loss, al, point_mixed, point_plain, [al.image, al.text], al.lam_x,' 'return _aligned(stage1_loss, al, point_mixed, point_plain, [al.image, al.text], al.lam,'
run drop_reverse_term mmmixlab/losses.py '        terms.append(info_nce(targets[name], anchor, logit_scale, weights, check))
' ''
run self_pairing mmmixlab/train.py '        partner = pair_indices(b, mc.pairing, generator=g)' '        partner = pair_indices(b, mc.pairing, generator=g); partner = torch.arange(b)'
run swap_image_text mmmixlab/objectives.py 'return _aligned(stage1_loss, al, al.mix(point, al.lam), point, [al.image, al.text], al.lam,' 'return _aligned(stage1_loss, al, al.mix(point, al.lam), point, [al.text, al.image], al.lam,'
run stage2_no_nograd mmmixlab/objectives.py '        with torch.no_grad():
            return ctx.encode("A", plan.points)' '        return ctx.encode("A", plan.points)'
run stage2_target_mixed_with_lam mmmixlab/objectives.py '    return _aligned(stage2_loss, al, point_mixed, point_plain,
                    [target_point, al.image, al.text], al.lam_x, scale, modalities)' '    return _aligned(stage2_loss, al, point_mixed, point_plain,
                    [target_point, al.image, al.text], al.lam, scale, modalities)'
