from yolopatch.cli import entry

entry()
