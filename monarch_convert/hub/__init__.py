"""Share a converted checkpoint on the Hugging Face Hub, with a model card that carries its evaluation.

- :mod:`.upload`: :func:`~.upload.push_to_hub` (``monarch_convert.push_to_hub``) uploads a converted
  folder plus a generated model card in one commit; :func:`~.upload.push_converted_dir` adds the
  CLI's progress lines.
- :mod:`.card`: :func:`~.card.build_model_card` (``monarch_convert.build_model_card``), one
  renderer per card section; :mod:`.eval_results` (its ``model-index`` metadata),
  :mod:`.pipeline_tags` and :mod:`.markdown` serve it.
- :mod:`.failures`: why an upload failed, in one line with no token in it.
- :mod:`.folder` and :mod:`.public_names`: reading the converted folder, and naming its source
  without revealing the uploader's file system.
- :mod:`.cli`: the ``monarch-convert upload DIR REPO_ID`` command.

Every module here imports only typer and the standard library at module level (the CLI's
``--help`` stays fast); huggingface_hub is imported by the functions that use it.
"""
