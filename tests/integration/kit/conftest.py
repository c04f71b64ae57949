import os
import sys
from pathlib import Path

_support = Path(os.environ.get("VIREO_SOURCE_DIR") or Path(__file__).resolve().parents[3]) / "tests" / "support"
sys.path.insert(0, str(_support))
