"""RAG re-indexing: documents → structure-aware chunks → embeddings → a versioned, evaluated vector index.

Modules: ``config`` (the ``rag_index`` template's model and its Assets), ``corpus`` (load, normalise, chunk),
``hashing`` (chunk ids, digests, the diff against an index), ``embeddings`` (sentence-transformers, offline),
``stores`` (one interface; LanceDB and Weaviate), ``versions`` (the catalog of index versions, fingerprints,
rollback), ``evaluation`` (hit@k, MRR, the gate, a version's recorded evaluation), ``plans`` (a run's plan
and staged embeddings under the data home), ``steps`` (the steps the ``rag_index`` DAG's tasks call, their
XCom types, and search for readers) and ``docstring_corpus`` (a benchmark corpus from installed packages).
Module tops import the standard library and Loopline's core only; heavy libraries are imported inside
functions.
"""
