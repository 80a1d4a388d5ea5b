"""python -m finetune.app: a web page over the runs folder. It holds no state of its own: every page is
read from the run folders and datasets, and every action runs one of the command-line tools."""
