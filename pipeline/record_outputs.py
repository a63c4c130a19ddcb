"""Local runs only: run a container component's command, then record its output artifacts.

    python3 -c "$(cat record_outputs.py)" '{{$}}' COMMAND [ARG...]

kfp.local 2.17 learns a task's output artifacts only from the ExecutorOutput file the task
writes (lightweight components write it; the cloud launchers need none), so without this the
artifacts of container components are lost and the next step cannot find its inputs. Given
the executor input (the ``{{$}}`` placeholder), this runs the command and, when it succeeds,
writes every output artifact the executor input announced into that file. Standard library
only: it runs in the component images with their ``python3``.
"""

import json
import subprocess
import sys


def main(argv):
    executor_input = json.loads(argv[0])
    code = subprocess.run(argv[1:]).returncode
    if code == 0:
        outputs = executor_input.get("outputs", {})
        with open(outputs["outputFile"], "w") as f:
            json.dump({"artifacts": outputs.get("artifacts", {})}, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
