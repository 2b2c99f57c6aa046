"""StdfExampleGen: a directory of STDF V4 tester files + final-test labels -> die tf.Examples."""
