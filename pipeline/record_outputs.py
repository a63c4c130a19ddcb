"""Local runs only: run a container component's command, then record its output artifacts.

    python3 -c "$(cat record_outputs.py)" EXECUTOR_INPUT COMMAND [ARG...]

kfp.local 2.17 learns a task's output artifacts only from the ExecutorOutput file the task
writes (lightweight components write it; the cloud launchers need none), so without this the
artifacts of container components are lost and the next step cannot find its inputs. Given
the executor input (KFP's placeholder for it, ``EXECUTOR_INPUT`` in definition.py), this runs
the command and, when it succeeds, writes every output artifact the executor input announced
into that file, keeping what the command itself reported there (the train step's metrics
metadata). Standard library only: it runs in the component images with their ``python3``.
Inlined in the command, it must never hold KFP's placeholder syntax (two opening braces).
"""

import json
import subprocess
import sys


def main(argv):
    executor_input = json.loads(argv[0])
    code = subprocess.run(argv[1:]).returncode
    if code == 0:
        outputs = executor_input.get("outputs", {})
        reported = {}
        try:
            with open(outputs["outputFile"]) as f:
                reported = json.load(f)
        except FileNotFoundError:
            pass
        artifacts = dict(outputs.get("artifacts", {}))
        artifacts.update(reported.get("artifacts", {}))
        with open(outputs["outputFile"], "w") as f:
            json.dump({**reported, "artifacts": artifacts}, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
