"""RAG re-indexing: documents → structure-aware chunks → embeddings → a versioned, evaluated vector index.

Modules: ``corpus`` (load, normalise, chunk), ``hashing`` (chunk ids, digests, the diff against an index),
``embeddings`` (sentence-transformers, offline), ``stores`` (one interface; LanceDB and Weaviate),
``versions`` (the catalog of index versions, rollback), ``evaluation`` (hit@k, MRR, the gate),
``indexing`` (the steps the ``rag_index`` DAG's tasks call, and search for readers), ``docstring_corpus``
(a benchmark corpus from installed packages) and ``demo`` (what ``make demo`` prints). Module tops import
the standard library and Loopline's settings only; heavy libraries are imported inside functions.
"""
