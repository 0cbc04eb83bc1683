# Runs one firmware test function under MicroPython:
#   micropython -X heapsize=192K mprun.py <module> <function> [args...]
# Prints PASS, or the failure with its traceback, and exits non-zero on failure.
# Extra arguments reach the function as strings (power-cut tests run each cut
# in a process of its own, as a real power-on would start).
import sys


def main():
    mod_name, fn_name = sys.argv[1], sys.argv[2]
    mod = __import__(mod_name)
    fn = getattr(mod, fn_name)
    try:
        fn(*sys.argv[3:])
    except Exception as e:
        sys.print_exception(e)
        print("FAIL", fn_name)
        sys.exit(1)
    print("PASS", fn_name)


main()
