"""eval_set@NAME: the trained mapper on an extra evaluation set -> metrics/eval_sets/NAME.json.

ESC-50 is reported per official fold (and their mean and spread); AudioCaps and folders as a whole.
"""

import sys

from a2i_core.devices import resolve_device
from a2i_core.errors import A2IError, exit_cleanly, setup_logging
from a2i_core.eval_sets import evaluate_set
from a2i_core.files import write_json
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    name = sys.argv[1]
    if name not in params.eval_sets:
        raise A2IError(f"no eval set {name!r} in params.yaml eval_sets (known: {', '.join(params.eval_sets)})")
    write_json(f"metrics/eval_sets/{name}.json", evaluate_set(params, name, resolve_device(params.evaluate.device)))


if __name__ == "__main__":
    main()
