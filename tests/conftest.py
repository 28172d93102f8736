import sys
from pathlib import Path

# tests.helpers is imported as a package from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
