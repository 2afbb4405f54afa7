# Task runner. Every target sets up what it needs first (idempotent).
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup course lab site test validate robustness zoo benchmark record notebooks bundle figures clean

setup:
	@bash scripts/setup.sh

## The course's main job on the embedded default: check the zoo, then run every lesson (time and memory table),
## as many side by side as the cores allow (two on two cores, one thread each).
course: setup
	$(PY) -m utils.course

## Open the course: JupyterLab on the start page (Markdown opens rendered, as the course's settings say).
lab: setup
	$(PY) -m jupyter lab notebooks/README.md

## A site to read the course on, offline: every executed lesson, the start page, glossary, papers, facilitator guide and
## workshop pages, with a sidebar and search, in build/site/html/ (open index.html, or publish the folder as it is).
## REPOSITORY=https://github.com/<owner>/<name> (and BRANCH=, default main): each lesson gets an "Open in Colab" button
## that opens its exercise notebook from there.
site: setup
	$(PY) -m utils.course.site $(if $(REPOSITORY),--repository "$(REPOSITORY)") $(if $(BRANCH),--branch "$(BRANCH)")

## The test suite (what CI runs). Two workers with one thread each: on two cores, two workers with two
## threads each keep waiting on each other (lesson 03 ran three times slower beside lesson 04 that way).
## Every test stops at its kind's time limit (tests/conftest.py). DURATIONS=<file>: also write each kind's measured
## times there (benchmarks/test-durations.json, which the limits are held to).
test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --durations=40 $(if $(DURATIONS),--record-durations "$(DURATIONS)")

## nbval over every lesson on whatever device is present (a GPU if torch sees one): every cell runs and the cells marked
## NBVAL_CHECK_OUTPUT must print what the committed notebook shows (docs/validation.md). Two threads per kernel, as many
## kernels side by side as the cores allow; prints the device, torch's build and each notebook's time.
## RECORD=<file>: also write them there as JSON (benchmarks/validate-*.json).
validate: setup
	$(PY) -m utils.course.validate $(if $(RECORD),--record "$(RECORD)")

## Do the lessons' claims hold on other samples? Runs every lesson on its own seeds and on 10 fresh samples
## (asserts recorded, not raised), prints which claims fail where with the spread of every asserted value,
## and each assert's margin (how far its number sat from the threshold, the thinnest listed), and records the sweep in
## benchmarks/robustness.json and the README's table. Eleven runs per lesson.
robustness: setup
	$(PY) -m utils.course --reseed 10

## Rebuild the tokenizers, every zoo model from scratch and its card, then the SAEs and theirs (resumable). The models train
## in two lanes side by side, one thread each (LANES=1: one after another, all threads); see utils/course/rebuild_zoo.py.
## RECORD=1 writes the timing to benchmarks/zoo_rebuild.json. Measured on the 2-core machine: 151 min (2 h 31 min) in all
## (models 138 min in the two lanes, SAEs 13 min), over the 2-hour budget; short runs had projected 1.5 h for the models.
zoo: setup
	$(PY) -m utils.course.rebuild_zoo $(if $(LANES),--lanes $(LANES)) $(if $(RECORD),--record)

benchmark: setup
	$(PY) scripts/benchmark.py

## Execute the solutions in place, then regenerate the exercise notebooks from them.
notebooks: setup
	$(PY) -m utils.course.notebooks execute
	$(PY) -m utils.course.notebooks build

## Re-measure and record: notebook times and memory, zoo speed, the README's tables and the workshop agendas' machine times
## (the only target that writes them).
record: setup
	$(PY) -m utils.course --record
	$(PY) scripts/benchmark.py
	$(PY) -m utils.course.records
	$(PY) -m utils.course.workshop

## One reproducible archive of the course for Colab workshops: dist/handson-mechinterp-<version>.tar.gz and its sha256.
## With URL=<where learners fetch the workshop archive, ending in handson-mechinterp-<version>-workshop.tar.gz>: also
## that archive (the course without solutions/ or the facilitator's answers) and dist/handson-mechinterp-<version>-workshop/,
## the exercise notebooks without solutions, with that URL and the workshop archive's checksum typed into each first cell.
## With SITE=<where make site's build/site/html is published>: those notebooks' links (glossary, start page, next lesson)
## point there. Without URL it prints the file name the URL must end with.
bundle: setup
	$(PY) -m utils.course.bundle $(if $(URL),--url "$(URL)") $(if $(SITE),--site "$(SITE)")

## Pictures to project: every lesson's static figures at 200 dpi (each lesson whose pictures changed is run once more,
## in a temporary copy, to draw them) and its mechanism diagrams, with a page listing them, in docs/figures/NN/.
## LESSONS="05 06" limits it to those lessons; FORCE=1 draws them again even where the page is current.
figures: setup
	$(PY) -m utils.course.figures $(LESSONS) $(if $(FORCE),--force)

clean:
	rm -rf .venv build runs .pytest_cache
