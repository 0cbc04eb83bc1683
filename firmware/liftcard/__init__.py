# liftcard reader firmware. Everything under this package runs on MicroPython
# (ESP32 and the unix port); the board modules are the only hardware boundary.
VERSION = "0.1.0"
