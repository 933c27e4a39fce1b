"""Placeholder; the protocol tests follow."""
import unittest
if __name__ == "__main__":
    unittest.main()
