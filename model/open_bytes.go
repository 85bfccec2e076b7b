package model

// OpenGGUFBytes opens a model from a whole GGUF file held in memory, such as one embedded in the
// binary with go:embed: hyper-parameters, tokenizer and tensors as Open gives them for a GGUF
// file, with name labelling errors and Model.Path. The tensors alias data, which must stay
// unchanged while the model is used; Close is a no-op.
func OpenGGUFBytes(name string, data []byte) (*Model, error) {
	g, err := ParseGGUF(name, data)
	if err != nil {
		return nil, err
	}
	return modelFromGGUF(g)
}
