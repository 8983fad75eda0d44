"""The sans-I/O core: formats, JWE, key wrapping and signatures.

Nothing here imports Flask, Werkzeug or redis, reads a global or does I/O; the framework
layers sit on top.
"""
