from nexus_dev.run import main

main(prog_name="python -m nexus_dev")
