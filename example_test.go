package bitgpu_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/bitgpu/bitgpu"
)

// Greedy decoding of the built-in model on the CPU. Every backend computes the same bits, so
// "auto" or "gpu" print the same text.
func ExampleModel_Generate() {
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	res, err := m.Generate(context.Background(), "The Python interpreter", bitgpu.GenerateOptions{MaxTokens: 12}, nil)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n%d prompt tokens, %d generated, stopped by %s\n", res.Text, res.PromptTokens, len(res.Tokens), res.Stop)
	// Output:
	// " to there is a synt to the ro"
	// 6 prompt tokens, 12 generated, stopped by length
}

// Streaming with an iterator; a seeded sampler gives the same text on every run and backend.
func ExampleModel_Stream() {
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	var b strings.Builder
	for piece, err := range m.Stream(context.Background(), "import os", bitgpu.GenerateOptions{
		MaxTokens: 16, Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: 7, Stop: []string{"\n\n"},
	}) {
		if err != nil {
			panic(err)
		}
		b.WriteString(piece)
	}
	fmt.Printf("%q\n", b.String())
	// Output:
	// " a plocke reverable. Aption is a don't"
}

func ExampleModel_Tokenize() {
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ids := m.Tokenize("Hello world", false)
	fmt.Println(ids, m.Detokenize(ids))
	// Output:
	// [72 101 311 111 276 270 406] Hello world
}

// A two-turn conversation with the model's chat template; the KV cache is kept between turns.
func ExampleChat_Send() {
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu", Ctx: 256})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	c, err := m.Chat("You are terse.", bitgpu.GenerateOptions{MaxTokens: 8})
	if err != nil {
		panic(err)
	}
	for _, msg := range []string{"What is a list?", "And a tuple?"} {
		res, err := c.Send(context.Background(), msg, nil)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%q\n", res.Text)
	}
	fmt.Println(len(c.Messages()), "messages")
	// Output:
	// "2.)\n\nThere is a"
	// "2.)\n\nThere is a"
	// 5 messages
}

func ExampleModel_Perplexity() {
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	text := strings.Repeat("The list type is a mutable sequence; tuples are immutable sequences. ", 8)
	ppl, err := m.Perplexity(context.Background(), text, 64, 1)
	if err != nil {
		panic(err)
	}
	fmt.Printf("ppl %.4f\n", ppl)
	// Output:
	// ppl 29.8855
}
