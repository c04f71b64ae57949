import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("VIREO_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..")),
                                "tests", "support"))
