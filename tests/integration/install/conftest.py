import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from reach_env import *  # noqa: E402,F401,F403
