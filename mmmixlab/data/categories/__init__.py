"""The SynthShapes categories, one module per family of objects.

Each builder takes the instance's random generator and returns ``(parts, attributes)``: the
primitives (:mod:`mmmixlab.data.primitives`) it assembled, and the attributes captions are made
from (see :mod:`mmmixlab.data.parts`). :mod:`mmmixlab.data.shapes` maps category names to
builders.

* :mod:`.seating`: chair, stool, sofa, bed, bench
* :mod:`.tables`: table, desk
* :mod:`.vessels`: cup, vase, bottle
* :mod:`.plants`: plant, flower_pot
* :mod:`.storage`: bookshelf, cabinet
* :mod:`.appliances`: lamp, monitor
"""
